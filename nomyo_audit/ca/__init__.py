"""The enrollment CA (``nomyo-audit ca init | enroll | serve``): AK certificates for AIKs proven to
live in a TPM whose EK certificate chains to a trusted manufacturer root (docs/anchoring.md).

:class:`Enrollment` holds the decisions (validate the EK chain, make the credential, judge the
answer), :class:`CertificateAuthority` signs only with the :class:`ActivationProof` that a right
answer yields, :func:`enroll_router` drives a running router's anchoring endpoints, and
:func:`create_ca_app` / :func:`enroll_with_ca` are the two sides of ``ca serve``, where routers
enroll themselves. Needs the ``router`` extra for the server.
"""

from .._anchoring_wire import Endorsement, parse_endorsement
from ._authority import (
    CA_CERTIFICATE_FILE,
    CA_KEY_FILE,
    ActivationProof,
    CertificateAuthority,
    init_authority,
    load_authority,
)
from ._enrollment import Enrollment, SpentSecrets
from ._router_enrollment import EnrollmentResult, enroll_router
from ._self_enrollment import enroll_with_ca
from ._server import ENROLLMENTS_PATH, create_ca_app

__all__ = [
    "CA_CERTIFICATE_FILE",
    "CA_KEY_FILE",
    "ENROLLMENTS_PATH",
    "ActivationProof",
    "CertificateAuthority",
    "Endorsement",
    "Enrollment",
    "EnrollmentResult",
    "SpentSecrets",
    "create_ca_app",
    "enroll_router",
    "enroll_with_ca",
    "init_authority",
    "load_authority",
    "parse_endorsement",
]
