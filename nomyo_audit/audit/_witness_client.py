"""Ask witnesses to cosign the log's latest checkpoint (c2sp.org/tlog-witness add-checkpoint).

The witnesses live in the log's ``meta`` (both backends): ``witnesses`` is a JSON list of
``{"url", "vkey", "size"}``, ``size`` being the tree size each witness is known to have
cosigned last; ``cosigned_checkpoint`` is the latest checkpoint note with every
cosignature obtained. For each witness the client sends ``old <size>``, the consistency
proof from that size (computed from the record bytes in one streaming pass), and the
note. A 409 tells the witness's real size: the client retries once with the right proof.

A witness that has cosigned a larger tree than the log now holds proves the log was
rolled back, and one that refuses the proof from a size it cosigned (422) proves the
history changed (a fork): both are :class:`WitnessRollback` (exit 3), naming the witness
and both sizes, raised after every witness was asked and what was learned was saved. A
witness that is down or refuses for another reason only costs its cosignature. Nothing
here runs on the append path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import IntegrityError
from ._cosignature import (
    WitnessKey,
    add_signature_lines,
    check_witness_keys,
    parse_witness_vkey,
    verified_cosignatures,
)
from ._note import NoteError, parse_checkpoint, verify_checkpoint
from ._store import LogError, LogStore
from ._witness_wire import add_checkpoint_body, bounded_request, proof_between

__all__ = [
    "CosignResult",
    "WitnessEntry",
    "WitnessOutcome",
    "WitnessRollback",
    "add_witness",
    "cosign_latest",
    "load_witnesses",
    "proof_between",
]

WITNESSES_META = "witnesses"
COSIGNED_META = "cosigned_checkpoint"
#: how a rollback or fork detail begins when a checkpoint signed by the log's own key proves it
PROVEN = "proven:"


class WitnessRollback(IntegrityError):
    """A witness has seen a larger or different tree than the log now has: rolled back or forked."""

    code = "witness_rollback"


@dataclass
class WitnessEntry:
    """One configured witness: where it listens, its cosignature/v1 vkey, the size it cosigned last."""

    url: str
    vkey: str
    size: int = 0

    @property
    def key(self) -> WitnessKey:
        """The witness's parsed key (the vkey was checked when the witness was added)."""
        return parse_witness_vkey(self.vkey)


@dataclass(frozen=True)
class WitnessOutcome:
    """What one witness did: ``cosigned``, ``failed`` (down, refused) or ``rollback``/``fork``."""

    entry: WitnessEntry
    status: str
    detail: str


@dataclass
class CosignResult:
    """The checkpoint submitted, the note with every cosignature now held, and each witness's outcome."""

    size: int
    note: str
    outcomes: list[WitnessOutcome] = field(default_factory=list)

    @property
    def cosigned(self) -> int:
        """How many witnesses cosigned it in this round."""
        return sum(outcome.status == "cosigned" for outcome in self.outcomes)


def load_witnesses(store: LogStore) -> list[WitnessEntry]:
    """The witnesses configured in the log's meta (IntegrityError when the entry is damaged)."""
    raw = store.meta(WITNESSES_META)
    if raw is None:
        return []
    try:
        entries = [WitnessEntry(str(i["url"]), str(i["vkey"]), int(i["size"])) for i in json.loads(raw)]
        for entry in entries:
            parse_witness_vkey(entry.vkey)
        return entries
    except (ValueError, KeyError, TypeError):  # NoteError is a ValueError
        raise IntegrityError("the log's witness list (meta 'witnesses') is damaged") from None


def _save(store: LogStore, entries: list[WitnessEntry]) -> None:
    document = [{"url": e.url, "vkey": e.vkey, "size": e.size} for e in entries]
    store.set_meta(WITNESSES_META, json.dumps(document).encode(), replace=True)


def add_witness(store: LogStore, url: str, vkey: str) -> WitnessEntry:
    """Configure a witness (or move a known one to ``url``); LogError for a bad URL or vkey."""
    if "@" in url.partition("://")[2].split("/", 1)[0]:  # never echo it: it may hold a password
        raise LogError(
            "a witness URL with a user name or password is refused: it is stored in the log and printed "
            "with every outcome (use a bastion without credentials in the URL)"
        )
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise LogError(f"a witness URL is http(s)://host[:port][/prefix], not {url[:100]!r}")
    try:
        key = parse_witness_vkey(vkey)
    except NoteError as exc:
        raise LogError(str(exc)) from None
    entries = load_witnesses(store)
    for entry in entries:
        if entry.key.vkey == key.vkey:
            entry.url = url.rstrip("/")
            break
    else:
        entries.append(WitnessEntry(url.rstrip("/"), key.vkey))
    raw = store.meta("public_key")
    try:
        log_key = Ed25519PublicKey.from_public_bytes(raw) if raw else None
    except ValueError:
        log_key = None
    try:
        check_witness_keys([entry.key for entry in entries], log_key)
    except NoteError as exc:
        raise LogError(str(exc)) from None
    _save(store, entries)
    return next(e for e in entries if e.vkey == key.vkey)


class _Round:
    """One cosigning round over the configured witnesses (state: the note, the log's size)."""

    def __init__(
        self, store: LogStore, note: str, log_size: int, http: httpx.Client, timeout: float = 10.0
    ) -> None:
        self.store, self.note, self.log_size, self.http = store, note, log_size, http
        self.timeout = timeout
        self.checkpoint = parse_checkpoint(note)[0]
        self.log_key = _signer(store, note)
        self._proofs: dict[int, tuple[list[bytes], bytes]] = {}

    def ask(self, entry: WitnessEntry) -> WitnessOutcome:
        name, cosigned = entry.key.name, entry.size
        for attempt in range(2):
            stale = self._beyond(entry, entry.size)
            if stale is not None and stale.status == "rollback" and PROVEN not in stale.detail:
                # A size the witness only claims (a 409 is unauthenticated) is not a verdict: one lying
                # witness must not pin the log in "rolled back". Not kept: it is asked again next round.
                entry.size = cosigned
                return WitnessOutcome(entry, "failed", f"{stale.detail} (not judged a rollback)")
            if stale is not None:
                return stale
            proof, root = self._proof(entry.size)
            if root != self.checkpoint.root:
                raise IntegrityError(
                    f"the log's records at size {self.checkpoint.size} do not give the root of "
                    "its latest checkpoint"
                )
            request = add_checkpoint_body(entry.size, proof, self.note)
            status, text = bounded_request(self.http, "POST", f"{entry.url}/add-checkpoint", request,
                                    within=self.timeout)
            if status == 200:
                return self._cosigned(entry, text)
            if status == 409 and attempt == 0:
                known = text.strip()
                if not known.isdigit() or len(known) > 20:
                    return WitnessOutcome(entry, "failed", f"409 without a size from witness {name}")
                entry.size = int(known)
                continue
            if status == 422 and entry.size > 0:
                return WitnessOutcome(
                    entry, "fork",
                    f"witness {name} ({entry.url}) cosigned a tree of size {entry.size} that this log's "
                    f"records do not extend to its checkpoint of size {self.checkpoint.size}: "
                    f"the log was rewritten (forked); {self._evidence(entry)}",
                )
            return WitnessOutcome(entry, "failed", f"witness {name} answered {status}: {text.strip()[:200]}")
        return WitnessOutcome(entry, "failed", f"witness {name} answered 409 twice")

    def _proof(self, old_size: int) -> tuple[list[bytes], bytes]:
        """The proof from ``old_size`` (one pass over the records, once per size in a round)."""
        if old_size not in self._proofs:
            self._proofs[old_size] = proof_between(self.store.scan(), old_size, self.checkpoint.size)
        return self._proofs[old_size]

    def _beyond(self, entry: WitnessEntry, known: int) -> WitnessOutcome | None:
        name = entry.key.name
        if known > self.checkpoint.size and self._newer_checkpoint(known):
            return WitnessOutcome(
                entry, "failed",
                f"witness {name} has already cosigned size {known}, past this round's checkpoint "
                f"{self.checkpoint.size}: the log now has a newer checkpoint of at least that size, signed "
                "by its key (another cosigning round ran meanwhile); run 'nomyo-audit log cosign' again",
            )
        if known > self.log_size:
            return WitnessOutcome(
                entry, "rollback",
                f"witness {name} ({entry.url}) has cosigned size {known}, but the log now has only "
                f"{self.log_size} records: the log was rolled back; {self._evidence(entry)}",
            )
        if known > self.checkpoint.size:
            return WitnessOutcome(
                entry, "rollback",
                f"witness {name} ({entry.url}) has cosigned size {known}, but the log's latest checkpoint "
                f"is size {self.checkpoint.size}: checkpoints were removed (sign a new one to continue); "
                f"{self._evidence(entry)}",
            )
        return None

    def _newer_checkpoint(self, known: int) -> bool:
        """Whether the log now holds a checkpoint of size >= ``known``, signed by its key, with the records.

        Then a witness past this round's checkpoint saw a later round's, not a rollback; whether
        that checkpoint extends the witness's is the next round's consistency proof to show.
        """
        if self.log_key is None:
            return False
        checkpoints = self.store.checkpoints()
        if not checkpoints or self.store.frontier().size < known:
            return False
        try:
            return verify_checkpoint(checkpoints[-1].note, self.log_key).size >= known
        except ValueError:  # NoteError, or a size too long for int()
            return False

    def _evidence(self, entry: WitnessEntry) -> str:
        """Whether the witness backs its word with a checkpoint this log's key signed (monitor endpoint).

        A witness's size is unauthenticated: only a checkpoint signed by the log's own key,
        which the log's records do not give, proves the rollback or fork (the text then starts
        with :data:`PROVEN`).
        """
        unproven = "the witness's word only: it serves no checkpoint signed by this log's key"
        if self.log_key is None:
            return unproven
        origin_hash = hashlib.sha256(self.checkpoint.origin.encode()).hexdigest()
        try:
            status, text = bounded_request(self.http, "GET", f"{entry.url}/{origin_hash}/checkpoint",
                                    within=self.timeout)
            if status != 200:
                return unproven
            theirs = verify_checkpoint(text, self.log_key)
        except (httpx.HTTPError, OSError, ValueError):  # the witness sent anything
            return unproven
        if theirs.origin != self.checkpoint.origin:
            return unproven
        if theirs.size > self.log_size:
            return f"{PROVEN} it holds checkpoint {theirs.size} signed by this log's key"
        if proof_between(self.store.scan(), 0, theirs.size)[1] != theirs.root:
            return (
                f"{PROVEN} it holds checkpoint {theirs.size} signed by this log's key, "
                "whose root the log's records no longer give"
            )
        return unproven

    def _cosigned(self, entry: WitnessEntry, text: str) -> WitnessOutcome:
        try:
            candidate = add_signature_lines(self.note, text)
            found, problems = verified_cosignatures(candidate, [entry.key])
        except NoteError as exc:
            return WitnessOutcome(entry, "failed", f"witness {entry.key.name} sent a malformed reply: {exc}")
        if not found:
            why = problems[0] if problems else "no cosignature by its key"
            return WitnessOutcome(entry, "failed", f"witness {entry.key.name}: {why}")
        self.note = add_signature_lines(self.note, found[0].line)
        entry.size = self.checkpoint.size
        detail = f"cosigned size {self.checkpoint.size} at {found[0].timestamp}"
        return WitnessOutcome(entry, "cosigned", detail)


def cosign_latest(
    store: LogStore,
    *,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
    report: Callable[[WitnessOutcome], None] | None = None,
) -> CosignResult:
    """Ask every configured witness to cosign the log's latest checkpoint; save what they said.

    Returns the result (each witness's outcome, the note with all cosignatures held, also
    kept as meta ``cosigned_checkpoint``). Raises :class:`WitnessRollback` (exit 3) when a
    witness shows the log was rolled back or forked, after saving; LogError when the log
    has no checkpoint or no witness.
    """
    entries = load_witnesses(store)
    checkpoints = store.checkpoints()
    if not entries:
        raise LogError("no witness is configured (nomyo-audit log witness add URL --key VKEY)")
    if not checkpoints:
        raise LogError("the log has no checkpoint to cosign yet (nomyo-audit log checkpoint)")
    note = _with_held_cosignatures(store, checkpoints[-1].note)
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    result = CosignResult(parse_checkpoint(note)[0].size, note)
    try:
        work = _Round(store, note, store.frontier().size, http, timeout)
        for entry in entries:
            try:
                outcome = work.ask(entry)
            except (httpx.HTTPError, OSError) as exc:
                outcome = WitnessOutcome(entry, "failed", f"witness {entry.key.name} unreachable: {exc}")
            result.outcomes.append(outcome)
            if report is not None:
                report(outcome)
        result.note = work.note
    finally:
        if client is None:
            http.close()
    learned = {entry.vkey: entry.size for entry in entries}
    current = load_witnesses(store)  # a witness added meanwhile is kept; only sizes change here
    for entry in current:
        entry.size = learned.get(entry.vkey, entry.size)
    _save(store, current)
    if result.cosigned and not _holds_newer(store, result.size):
        store.set_meta(COSIGNED_META, result.note.encode(), replace=True)
    broken = [o.detail for o in result.outcomes if o.status in ("rollback", "fork")]
    if broken:
        raise WitnessRollback("; ".join(broken))
    return result


def _holds_newer(store: LogStore, size: int) -> bool:
    """Whether meta already holds a cosigned checkpoint larger than ``size`` (a later round's, kept)."""
    held = store.meta(COSIGNED_META)
    try:
        return held is not None and parse_checkpoint(held.decode("utf-8"))[0].size > size
    except ValueError:  # not UTF-8, not a checkpoint
        return False


def _signer(store: LogStore, note: str) -> Ed25519PublicKey | None:
    """The log's key, if it signed ``note`` (the latest checkpoint); None otherwise."""
    raw = store.meta("public_key")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw) if raw else None
        if key is not None:
            verify_checkpoint(note, key)
    except (ValueError, NoteError):
        return None
    return key


def _with_held_cosignatures(store: LogStore, note: str) -> str:
    """``note`` plus the cosignatures already held for the same checkpoint body (none otherwise)."""
    held = store.meta(COSIGNED_META)
    if held is None:
        return note
    text = held.decode("utf-8", "replace")
    if text.partition("\n\n")[0] != note.partition("\n\n")[0]:
        return note
    try:
        return add_signature_lines(note, text.partition("\n\n")[2])
    except ValueError:
        return note  # a damaged copy is replaced by this round's
