"""blackbox_exporter's CEL checks of a JSON body (`fail_if_body_json_matches_cel`,
`fail_if_body_json_not_matches_cel`), so a module written for it works unchanged.

The expression sees the parsed body as `body` and must yield a boolean. The CEL runtime
(cel-python) is imported when the first expression is compiled, so a config without one
never loads it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema


class CelProgram:
    """A CEL expression compiled at load: a typo is a config error, not a failing probe."""

    __slots__ = ("_program", "expression")

    def __init__(self, expression: str) -> None:
        import celpy  # only a config with a CEL check pays for the runtime
        from celpy.celparser import CELParseError

        self.expression = expression
        environment = celpy.Environment()
        try:
            self._program = environment.program(environment.compile(expression))
        except CELParseError as exc:
            raise PydanticCustomError(
                "cel",
                "{found} is not a CEL expression: {error}",
                {"found": repr(expression)[:120], "error": str(exc).splitlines()[0][:200]},
            ) from None

    def verdict(self, body: bytes) -> bool | str:
        """The expression's value for this JSON body, or why there is none: the body is not
        JSON, the expression fails on it (a missing key) or yields no boolean."""
        from celpy.adapter import json_to_cel
        from celpy.celtypes import BoolType
        from celpy.evaluation import CELEvalError, CELUnsupportedError

        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return "the body is not JSON"
        try:
            result: Any = self._program.evaluate({"body": json_to_cel(document)})
        except (CELEvalError, CELUnsupportedError) as exc:
            return f"evaluating it failed: {str(exc.args[0] if exc.args else exc)[:120]}"
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            # what the JSON-to-CEL conversion raises on a number past 64 bits or a document
            # nested past the interpreter's depth
            return f"the body cannot be read as CEL values: {type(exc).__name__}"
        if isinstance(result, BoolType | bool):
            return bool(result)
        return f"it yields {type(result).__name__}, not a boolean"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelProgram) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)

    def __repr__(self) -> str:
        return f"CelProgram({self.expression!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated from the expression's text; written back as that text."""
        return core_schema.no_info_plain_validator_function(
            _compile,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda program: program.expression, return_schema=core_schema.str_schema()
            ),
        )


def _compile(value: Any) -> CelProgram:
    if isinstance(value, CelProgram):
        return value
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError(
            "cel", "expected a CEL expression as a string, found {found}", {"found": repr(value)}
        )
    return CelProgram(value)
