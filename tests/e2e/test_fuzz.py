"""Property-based fuzzing of every operation in each service's OpenAPI document (schemathesis), against a
real running service: whatever a client sends, the answer is never a server error.

Bounded: FUZZ_EXAMPLES cases per operation (about a minute per service on 2 cores). The fuzzed service
makes no traffic beyond this machine: Kafka is off, cameras are limited to a host name that is never
resolved, and `url` inputs (which the service would fetch) are removed from the generated bodies;
remote ingestion has its own tests against local servers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from rtvi import services
from tests.servers import RtviServer

FUZZ_EXAMPLES = 15  # per operation and generation mode (valid and invalid inputs)


@pytest.fixture(scope="module", params=services.names())
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(
        tmp_path_factory.mktemp(f"fuzz-{request.param}") / "assets",
        service=request.param,
        env={
            "KAFKA_BOOTSTRAP_SERVERS": "",
            "RTVI_RTSP_ALLOWED_HOSTS": "camera.invalid",
            "RTVI_RTSP_OPEN_TIMEOUT_SEC": "1",
        },
    ).start()
    yield srv
    srv.stop()


def _local_only(body: object) -> None:
    """Remove inputs the service would fetch from elsewhere (see the module docstring)."""
    if isinstance(body, dict):
        body.pop("url", None)
        body.pop("url_headers", None)


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, model: str) -> None:
    """FUZZ_EXAMPLES cases of one operation; raises on the first failing case (hypothesis shrinks it)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        _local_only(case.body)
        if mode == GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = model  # past the model check, into the request's own validation
        response = case.call(timeout=60)
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

    run()


def test_no_input_causes_a_server_error(fuzzed: RtviServer) -> None:
    # schemathesis's own pytest plugin does not run under pytest 9: its strategies are driven directly.
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    # An endless event stream (the alert incidents' SSE feed) has no input to fuzz and never ends.
    operations = [
        op for op in (r.ok() for r in schema.get_all_operations()) if not op.path.endswith("/stream")
    ]
    assert len(operations) >= 20, "the document lists the service's operations"
    model = httpx.get(fuzzed.url + "/v1/models").json()["data"][0]["id"]
    failures: list[str] = []
    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        try:
            _fuzz(operation, mode, model)
        except Exception as exc:  # every operation's failure, reported together
            failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
