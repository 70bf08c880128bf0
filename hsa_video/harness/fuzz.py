"""schemathesis against the gateway's OpenAPI schema, with this API's own error-shape check."""

from __future__ import annotations

from dataclasses import dataclass, field

from .stack import SOURCE_ROOT


def documented_error_codes() -> set[str]:
    """Every ``code`` in docs/api.md's error table: the stable codes clients may rely on."""
    import re

    text = (SOURCE_ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| HTTP | `code` |"):]
    table = table[:table.index("\n\n")]
    return set(re.findall(r"`([a-z_]+)`", table)) - {"code"}


@dataclass
class FuzzResult:
    cases: int = 0
    server_errors: list[str] = field(default_factory=list)  # 5xx responses
    unstable_errors: list[str] = field(default_factory=list)  # errors that are not JSON with a documented code
    # responses the OpenAPI schema does not describe: an undeclared status, a body or header off its schema
    nonconforming: list[str] = field(default_factory=list)


def fuzz_gateway(base_url: str, api_key: str, examples_per_operation: int) -> FuzzResult:
    """schemathesis against the gateway's OpenAPI schema: for every operation, ``examples_per_operation``
    valid and as many schema-violating requests (deterministic), each checked for a 5xx, for the error
    shape and with schemathesis' checks. Requests carry the API key, so they reach the handlers rather
    than stop at 401.

    Every check runs but ``positive_data_acceptance``: a request valid by the static schema may still
    ask for what no live model offers (a size, a frame count, a budget its steps cannot reach, an image
    that is not one), which the API refuses with a documented 422; the schema cannot know which models
    are live."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import CHECKS

    codes = documented_error_codes()
    result = FuzzResult()
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    schema.config.update(base_url=base_url)
    headers = {"Authorization": f"Bearer {api_key}"}

    model_dependent = CHECKS.get_by_names(["positive_data_acceptance"])

    def check(case) -> None:
        response = case.call(headers=headers, timeout=30)
        result.cases += 1
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
        try:
            case.validate_response(response, excluded_checks=model_dependent, headers=headers)
        except Exception as failures:  # a group of the checks that failed
            for failure in getattr(failures, "exceptions", [failures]):
                result.nonconforming.append(f"{type(failure).__name__}: {where}")
        if response.status_code >= 500:
            result.server_errors.append(where)
        elif response.status_code >= 400:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = None
            if code not in codes:
                result.unstable_errors.append(where)

    for operation in schema.get_all_operations():
        operation = operation.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = settings(max_examples=examples_per_operation, deadline=None, database=None, derandomize=True,
                           suppress_health_check=list(HealthCheck))(given(case=operation.as_strategy(mode))(check))
            try:
                run()
            except Exception as error:  # schemathesis cannot build a negative case for every operation
                if "Unsatisfiable" not in type(error).__name__:
                    raise
    return result
