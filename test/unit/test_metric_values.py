"""The write path's metric shortcuts: the cached process id follows a fork (prometheus_client's
multiprocess files are per process), and `labelled` is `labels()` looked up once."""

from __future__ import annotations

import os

from datastorage.metrics import AUDIT_TRACES, _ProcessId, labelled


def test_cached_process_id_is_the_childs_own_after_a_fork():
    process_id = _ProcessId()
    assert process_id() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports what the cached id says there, then leaves at once
        os.write(write, str(process_id()).encode())
        os._exit(0)
    os.close(write)
    reported = int(os.read(read, 32))
    os.close(read)
    os.waitpid(child, 0)
    assert reported == child
    assert process_id() == os.getpid()


def test_labelled_is_the_metrics_own_child():
    child = labelled(AUDIT_TRACES, "gateway", "success")
    assert child is AUDIT_TRACES.labels("gateway", "success")
    assert labelled(AUDIT_TRACES, "gateway", "success") is child
