import sys

from stackprobe.cli import main

sys.exit(main())
