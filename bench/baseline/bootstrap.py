"""A minimal Lambda runtime loop for the Python baseline (what awslambdaric does, without its extras).

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT python bench/baseline/bootstrap.py

Imports handler.py (the init phase: boto3 and its clients), then loops on the Runtime API:
GET /2018-06-01/runtime/invocation/next, call the handler, POST .../response (or .../error).
Standard library only; the real runtime interface client does more, so this flatters Python.
"""

import json
import os
import sys
import types
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
BASE = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"

try:
    import handler  # noqa: E402  (the init phase)
except Exception as err:  # noqa: BLE001 - reported to the Runtime API, as Lambda does
    body = json.dumps({"errorType": type(err).__name__, "errorMessage": str(err)}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{BASE}/init/error", data=body, method="POST"))
    raise


def main() -> None:
    while True:
        with urllib.request.urlopen(f"{BASE}/invocation/next") as r:
            request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
            context = types.SimpleNamespace(invoked_function_arn=r.headers.get("Lambda-Runtime-Invoked-Function-Arn"))
            event = json.loads(r.read())
        try:
            path, body = "response", json.dumps(handler.handler(event, context)).encode()
        except Exception as err:  # noqa: BLE001
            path, body = "error", json.dumps({"errorType": type(err).__name__, "errorMessage": str(err)}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{BASE}/invocation/{request_id}/{path}", data=body,
                                                      method="POST")).read()


if __name__ == "__main__":
    main()
