"""Issue 12 finding 6, the kill tests: the real Dagster daemon (sensors, run queue, run monitoring,
DefaultRunLauncher) ingests a batch; the daemon with everything it started, or only the run worker,
is killed with SIGKILL mid-batch. Every document must end `indexed` or `failed` with a reason, none
stuck in progress and none indexed twice. The deadlines below are generous bounds for polling, not
assertions about speed."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from sqlalchemy import text

from core.db.database import tenant_session
from core.settings import get_settings
from eap.up import REPO_ROOT, child_env
from ingestion import submission
from tests.builders import text_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
DEADLINE_S = 480  # generous: 2 shared cores, a model load per run


class Daemon:
    """`dagster-daemon run` for a DAGSTER_HOME of this test, with short monitoring intervals."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.log = home / f"daemon-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def tree(self) -> list[psutil.Process]:
        try:
            me = psutil.Process(self.proc.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def run_workers(self) -> list[psutil.Process]:
        """DefaultRunLauncher: the code server (`dagster api grpc`) starts each run worker as a
        multiprocessing child."""
        out = []
        for p in self.tree()[1:]:
            try:
                if "grpc" not in p.cmdline():
                    continue
                out += [c for c in p.children() if "spawn_main" in " ".join(c.cmdline())
                        and "resource_tracker" not in " ".join(c.cmdline())]
            except psutil.NoSuchProcess:
                pass
        return out

    def kill(self) -> None:
        """SIGKILL the daemon and everything it started (code server, run workers, step processes)."""
        _kill([*self.tree()])
        self.proc.wait(30)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def _statuses(tenant) -> dict[str, tuple[str, str | None]]:
    with tenant_session(tenant.id) as s:
        return {str(r.id): (r.status, r.status_reason)
                for r in s.execute(text("SELECT id, status, status_reason FROM documents")).all()}


def _wait(pred, what: str, daemon: Daemon, deadline_s: float = DEADLINE_S, every: float = 0.3):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        assert daemon.proc.poll() is None, f"daemon exited:\n{daemon.tail()}"
        time.sleep(every)
    raise AssertionError(f"not within {deadline_s} s: {what}\n{daemon.tail()}")


def _submit_batch(tenant, tag: str) -> list[str]:
    docs = {f"{tag}-{i}.md": f"# {tag} SOP {i}\n\nSet the clamp pressure of press P{i} to {40 + i} bar.".encode()
            for i in range(4)}
    # A scan makes the run long enough to be killed in the middle (OCR takes seconds).
    docs[f"{tag}-scan.png"] = text_image([f"{tag} inspection label", "Torque for M8 bolts is 25 Nm."])
    return [str(submission.submit_document(tenant.id, filename=name, stream=io.BytesIO(data), actor="test").document_id)
            for name, data in docs.items()]


def _requeued(tenant) -> int:
    """Documents put back in the queue because their run died (audited by the intake sensor)."""
    with tenant_session(tenant.id) as s:
        return s.execute(text("SELECT count(*) FROM audit_events WHERE action = 'document.requeued'")).scalar()


def _settled(tenant, ids: list[str]) -> bool:
    rows = _statuses(tenant)
    return all(rows.get(i, ("?",))[0] in ("indexed", "failed") for i in ids)


def _assert_settled_once(tenant, ids: list[str]) -> None:
    rows = _statuses(tenant)
    for i in ids:
        status, reason = rows[i]
        assert status in ("indexed", "failed"), (i, status, reason)
        if status == "failed":
            assert reason, i
    with tenant_session(tenant.id) as s:
        dup = s.execute(text("SELECT d.id, d.chunk_count, count(c.id) AS n, count(DISTINCT c.ordinal) AS ords "
                             "FROM documents d LEFT JOIN chunks c ON c.document_id = d.id GROUP BY d.id")).all()
    for row in dup:
        assert row.n == row.chunk_count == row.ords, row  # every chunk once


@pytest.fixture
def dagster_env(platform_db, tmp_path):
    settings = get_settings()
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config["run_monitoring"].update({"poll_interval_seconds": 2, "start_timeout_seconds": 60,
                                     "cancel_timeout_seconds": 30})
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = child_env(settings, platform_db)
    env.update({"DAGSTER_HOME": str(home), "EAP_INGEST_HEARTBEAT_S": "1", "EAP_INGEST_STALE_S": "20",
                "EAP_INGEST_MAX_ATTEMPTS": "3", "OMP_THREAD_LIMIT": "1"})
    return home, env


def test_daemon_and_run_worker_killed_mid_batch(dagster_env, make_tenant):
    home, env = dagster_env
    t = make_tenant("kill")
    daemons: list[Daemon] = []
    try:
        # 1. The daemon, its code server and the run worker die together mid-batch.
        first = _submit_batch(t, "a")
        daemons.append(Daemon(home, env))
        _wait(lambda: any(s == "parsing" for s, _ in _statuses(t).values()), "a run took the batch", daemons[-1],
              every=0.1)
        in_progress = [i for i, (s, _) in _statuses(t).items() if s == "parsing"]
        daemons[-1].kill()
        assert in_progress, "the batch was not in progress when the daemon was killed"
        # 2. A new daemon finds the dead run (no heartbeat), requeues its documents, ingests them.
        daemons.append(Daemon(home, env))
        _wait(lambda: _settled(t, first), "the first batch settled after the daemon was killed", daemons[-1])
        _assert_settled_once(t, first)
        after_first = _requeued(t)
        assert after_first >= len(in_progress)  # recovered by requeueing, not by luck

        # 3. Only the run worker is killed; the daemon lives on.
        second = _submit_batch(t, "b")
        daemon = daemons[-1]
        _wait(lambda: any(_statuses(t)[i][0] == "parsing" for i in second) and daemon.run_workers(),
              "a run worker took the second batch", daemon, every=0.1)
        workers = daemon.run_workers()
        _kill([p for w in workers for p in [w, *w.children(recursive=True)]])
        _wait(lambda: _settled(t, second), "the second batch settled after its run worker was killed", daemon)
        assert _requeued(t) > after_first
        _assert_settled_once(t, first + second)
        assert len(_statuses(t)) == len(first) + len(second)  # nothing duplicated as a document either
        assert sum(1 for s, _ in _statuses(t).values() if s == "indexed") == len(first) + len(second)
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.kill()
        with tenant_session(t.id) as s:  # nothing of this test may linger in progress for later tests
            s.execute(text("UPDATE documents SET status = 'failed', status_reason = 'kill test ended' "
                           "WHERE status IN ('queued', 'parsing')"))
