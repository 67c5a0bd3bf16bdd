"""A writer process for the PostgreSQL kill tests: ``python postgres_writer.py URL KEY THREADS PREFIX``.

Opens the log at URL with the checkpoint key (so whichever writer holds the sequencer also makes
checkpoints) and appends realistic records (:func:`nomyo_audit.audit.build_record`) from THREADS
threads until killed. After each acknowledged append it prints ``ack <payload_id> <seq>`` and
flushes: from that line on the record must be in the log, exactly once. A failed append prints
``error <payload_id> <code>`` (it was not acknowledged; it may still be sequenced later) and the
thread goes on. Prints ``ready <pid>`` once the log is open.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from nomyo_audit.audit import AuditLog, build_record
from nomyo_audit.errors import NomyoAuditError

_OUT = threading.Lock()


def say(line: str) -> None:
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def record(payload_id: str):  # type: ignore[no-untyped-def]
    moment = time.time()

    def build(seq: int, salt: bytes) -> bytes:
        return build_record(
            seq=seq, timestamp=moment, salt=salt, payload_id=payload_id, router="https://router.example",
            server_key="sha256:" + "ab" * 32, model="llama-3.1-8b", security_tier="high", outcome="ok",
            request={"model": "llama-3.1-8b",
                     "messages": [{"role": "user", "content": f"question {payload_id}"}]},
            response={"id": payload_id, "object": "chat.completion", "model": "llama-3.1-8b",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer"}}]},
        )
    return build


def main() -> None:
    url, key_file, threads, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(key_file, "rb") as fh:
        key = load_pem_private_key(fh.read(), None)
    with AuditLog(url, key=key, checkpoint_every=500, checkpoint_interval=2.0) as log:  # type: ignore[arg-type]
        say(f"ready {os.getpid()}")

        def work(n: int) -> None:
            i = 0
            while True:
                payload_id = f"{prefix}{n}-{i}"
                i += 1
                try:
                    seq = log.append(payload_id, record(payload_id))
                except NomyoAuditError as exc:
                    say(f"error {payload_id} {exc.code}")
                    time.sleep(0.05)
                    continue
                except Exception as exc:  # outside the error tree: a bug the test reports
                    say(f"error {payload_id} BUG:{type(exc).__name__}")
                    time.sleep(0.05)
                    continue
                say(f"ack {payload_id} {seq}")

        workers = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


if __name__ == "__main__":
    main()
