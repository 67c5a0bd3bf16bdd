"""`log verify` of a log that writers keep appending to: the blobs table is read before the records,
so a record appended in between references a blob the first read did not see. That blob is looked
up again before it is called missing; a blob that is truly missing is still a problem."""

from __future__ import annotations

from test_audit_blobs import EVENT_LOG, b64, record, reply

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._verification import verify_store


class _BlobsReadEarly:
    """The store as verify sees it while a writer appends: its blobs() snapshot is taken first."""

    def __init__(self, store, snapshot):
        self._store, self._snapshot = store, snapshot

    def blobs(self):
        return iter(self._snapshot)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_blob_appended_after_the_blobs_were_read_is_not_called_missing(tmp_path):
    with AuditLog(tmp_path / "audit.db") as log:
        record(log, "before", reply("before"))
        snapshot = list(log.store.blobs())  # verify has read the blobs table...
        record(log, "during", reply("during", event_log_b64=b64(EVENT_LOG)))  # ...then a writer appends
        report = verify_store(_BlobsReadEarly(log.store, snapshot), None, False, None, [])
    assert report.problems == []


def test_a_blob_looked_up_again_must_still_be_there_and_hash_to_its_key(tmp_path):
    with AuditLog(tmp_path / "audit.db") as log:
        record(log, "r", reply("r", event_log_b64=b64(EVENT_LOG)))
        gone = _BlobsReadEarly(log.store, [])
        gone.blob = lambda digest: None
        assert any("missing" in p for p in verify_store(gone, None, False, None, []).problems)
        altered = _BlobsReadEarly(log.store, [])
        altered.blob = lambda digest: b"not the event log"
        assert any("missing" in p for p in verify_store(altered, None, False, None, []).problems)
