"""`generate --address` naming something that is no running Ray dashboard stops with one line
naming the address and what to give instead (exit 2), never a traceback. No Ray cluster is
started: the addresses are a plain web server, a refused port and a silent GCS address."""

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline import cli

REPOSITORY = Path(__file__).resolve().parents[2]
HINT = "give the address of a running Ray cluster's dashboard (http://127.0.0.1:8265 through"


class _NotFound(http.server.BaseHTTPRequestHandler):
    """A web server that is not Ray's: every path is 404, and each path asked is kept."""

    asked: ClassVar[list[str]] = []

    def do_GET(self):
        self.asked.append(self.path)
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    _NotFound.asked = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_address_from_the_environment(monkeypatch):
    """Ray's client takes RAY_ADDRESS or RAY_API_SERVER_ADDRESS over the address given."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _generate(address: str, out: Path) -> list[str]:
    return ["generate", "--sources", "embedded", "--out", str(out), "--address", address]


def _error_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("iqa-factory: error: ")]
    assert "Traceback" not in stderr
    return line


def test_a_web_server_that_is_not_a_ray_dashboard_is_named_in_one_line(plain_web_server,
                                                                       tmp_path, capsys):
    assert cli.main(_generate(plain_web_server, tmp_path / "o")) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"no Ray dashboard answers at --address {plain_web_server} " in line
    assert "404" in line and HINT in line
    assert _NotFound.asked == ["/api/version"]  # Ray's client asked it, and got its 404


def test_a_refused_port_is_named_in_one_line(tmp_path, capsys):
    address = f"http://127.0.0.1:{_closed_port()}"
    assert cli.main(_generate(address, tmp_path / "o")) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"no Ray dashboard answers at --address {address} " in line and HINT in line


def test_an_address_without_a_scheme_that_no_gcs_answers_is_named_in_one_line(tmp_path):
    """Ray reads host:port as a GCS address and waits some 40 s for it; its own settings
    shorten the wait to seconds here (they are read when the process starts)."""
    address = f"127.0.0.1:{_closed_port()}"
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    environment.update(PYTHONPATH=str(REPOSITORY), RAY_py_gcs_connect_timeout_s="1",
                       RAY_gcs_rpc_server_connect_timeout_s="1")
    run = subprocess.run([sys.executable, "-m", "pipeline.cli",
                          *_generate(address, tmp_path / "o")],
                         capture_output=True, text=True, env=environment, timeout=60)
    assert run.returncode == 2
    line = _error_line(run.stderr)
    assert f"no Ray dashboard answers at --address {address} " in line and HINT in line
