"""What the TCG profiles put in EK and AK certificates, decoded from the raw extension bytes.

* The TPM identity: tpmManufacturer / tpmModel / tpmVersion (2.23.133.2.1/2/3), in a critical
  subjectAltName directoryName (TCG EK Credential Profile 2.0, 3.2.9). Real certificates put
  them in one RDN or three, in any order, and a few in subjectDirectoryAttributes instead.
* The TPM vendor ID registry (TCG "TPM Vendor ID Registry"; the table tpm2-tools'
  tpm2_getekcertificate carries): the manufacturer "id:4E544300" is Nuvoton.
* basicConstraints, keyUsage and extendedKeyUsage, read from the exact bytes so a certificate
  ``cryptography`` could only load after repairs is judged on what its issuer signed.

Pure, no I/O; every failure is ``cert_malformed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._der import BOOLEAN, INTEGER, OID, SEQUENCE, SET, TLV, decode_oid, malformed, read_all, read_one
from ._x509 import RawCertificate, decode_string

__all__ = [
    "EKU_AIK_CERTIFICATE",
    "EKU_EK_CERTIFICATE",
    "OID_TPM_MANUFACTURER",
    "OID_TPM_MODEL",
    "OID_TPM_VERSION",
    "TPM_VENDORS",
    "TpmIdentity",
    "basic_constraints",
    "extended_key_usage",
    "key_usage",
    "manufacturer_name",
    "normalize_manufacturer",
    "tpm_identity",
]

OID_TPM_MANUFACTURER, OID_TPM_MODEL, OID_TPM_VERSION = "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"
EKU_EK_CERTIFICATE = "2.23.133.8.1"  #: tcg-kp-EKCertificate
EKU_AIK_CERTIFICATE = "2.23.133.8.3"  #: tcg-kp-AIKCertificate
OID_SUBJECT_ALT_NAME, OID_SUBJECT_DIRECTORY_ATTRIBUTES = "2.5.29.17", "2.5.29.9"
OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_EXTENDED_KEY_USAGE = "2.5.29.19", "2.5.29.15", "2.5.29.37"
_TCG_OIDS = (OID_TPM_MANUFACTURER, OID_TPM_MODEL, OID_TPM_VERSION)
_KEY_USAGE_BITS = ("digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
                   "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly")  # fmt: skip

#: TCG TPM vendor IDs (the 4-byte TPM_PT_MANUFACTURER, as "id:XXXXXXXX" in certificates).
TPM_VENDORS = {
    0x414D4400: "AMD", 0x41544D4C: "Atmel", 0x4252434D: "Broadcom", 0x4353434F: "Cisco",
    0x464C5953: "Flyslice Technologies", 0x524F4343: "Fuzhou Rockchip", 0x474F4F47: "Google",
    0x48504500: "HPE", 0x48495349: "Huawei", 0x49424D00: "IBM", 0x49465800: "Infineon",
    0x494E5443: "Intel", 0x4C454E00: "Lenovo", 0x4D534654: "Microsoft",
    0x4E534D20: "National Semiconductor", 0x4E545A00: "Nationz", 0x4E544300: "Nuvoton",
    0x51434F4D: "Qualcomm",
    0x534D534E: "Samsung", 0x534E5300: "Sinosun", 0x534D5343: "SMSC", 0x53544D20: "STMicroelectronics",
    0x54584E00: "Texas Instruments", 0x57454300: "Winbond",
}  # fmt: skip


@dataclass(frozen=True)
class TpmIdentity:
    """The TCG TPM attributes of a certificate and how they were found (``quirks``)."""

    manufacturer: str
    model: str | None
    version: str | None
    quirks: tuple[str, ...]


def normalize_manufacturer(text: str) -> str:
    """ "id:" and 8 upper-case hex digits, the profile's form, when ``text`` is a vendor ID written
    another way (lower case, no leading zeros, spaces); otherwise ``text`` unchanged."""
    stripped = text.strip()
    digits = stripped[3:].strip() if stripped[:3].lower() == "id:" else ""
    if not digits or len(digits) > 8 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return text
    return f"id:{int(digits, 16):08X}"


def manufacturer_name(manufacturer: str) -> str | None:
    """The registered vendor name for "id:XXXXXXXX" (any case, leading zeros optional), else None."""
    normalized = normalize_manufacturer(manufacturer)
    digits = normalized[3:] if normalized[:3] == "id:" else ""
    if len(digits) != 8 or any(c not in "0123456789ABCDEF" for c in digits):
        return None
    return TPM_VENDORS.get(int(normalized[3:], 16))


def tpm_identity(certificate: RawCertificate) -> TpmIdentity | None:
    """The TPM attributes from the SAN (or, failing that, subjectDirectoryAttributes); None if absent."""
    quirks: list[str] = []
    found: dict[str, str] = {}
    san = certificate.extension(OID_SUBJECT_ALT_NAME)
    if san is not None:
        found = _from_general_names(san.value, quirks)
        if found and not san.critical:
            quirks.append("san_not_critical")
    if not found:
        sda = certificate.extension(OID_SUBJECT_DIRECTORY_ATTRIBUTES)
        found = _from_directory_attributes(sda.value, quirks) if sda is not None else {}
        if found:
            quirks.append("tpm_attributes_in_sda")
    if OID_TPM_MANUFACTURER not in found:
        return None
    written = found[OID_TPM_MANUFACTURER]
    manufacturer = normalize_manufacturer(written)
    if written != manufacturer:
        quirks.append("manufacturer_id_format")
    return TpmIdentity(manufacturer, found.get(OID_TPM_MODEL), found.get(OID_TPM_VERSION), tuple(quirks))


def _from_general_names(value: bytes, quirks: list[str]) -> dict[str, str]:
    names = read_one(value)[0]
    if names.tag != SEQUENCE:
        raise malformed("subjectAltName is not a SEQUENCE")
    found: dict[str, str] = {}
    for general_name in names.children():
        if general_name.tag != 0xA4:  # directoryName [4]; other forms carry no TPM identity
            continue
        name = general_name.children()
        if len(name) != 1 or name[0].tag != SEQUENCE:
            raise malformed("bad directoryName")
        rdns = [rdn for rdn in name[0].children() if rdn.tag == SET]
        holding = 0
        for rdn in rdns:
            pairs = _attributes(rdn.children(), quirks)
            holding += bool(pairs)
            found.update(pairs)
        if holding == 1 and len(found) > 1:
            quirks.append("san_single_rdn")
    return found


def _attributes(attributes: list, quirks: list[str]) -> dict[str, str]:  # type: ignore[type-arg]
    found = {}
    for attribute in attributes:
        parts = attribute.children()
        if attribute.tag != SEQUENCE or len(parts) != 2 or parts[0].tag != OID:
            raise malformed("bad attribute")
        oid = decode_oid(parts[0])
        if oid in _TCG_OIDS:
            if parts[1].tag != 0x0C:
                quirks.append("tpm_attribute_string_type")
            found[oid] = decode_string(parts[1])
    return found


def _from_directory_attributes(value: bytes, quirks: list[str]) -> dict[str, str]:
    container = read_one(value)[0]
    if container.tag != SEQUENCE:
        raise malformed("subjectDirectoryAttributes is not a SEQUENCE")
    found = {}
    for attribute in container.children():
        parts = attribute.children()
        if attribute.tag != SEQUENCE or len(parts) != 2 or parts[1].tag != SET:
            raise malformed("bad directory attribute")
        oid = decode_oid(parts[0])
        values = parts[1].children()
        if oid in _TCG_OIDS and values:
            if values[0].tag != 0x0C:
                quirks.append("tpm_attribute_string_type")
            found[oid] = decode_string(values[0])
    return found


def basic_constraints(certificate: RawCertificate) -> tuple[bool, int | None] | None:
    """(cA, pathLenConstraint) of basicConstraints, or None without the extension."""
    container = _extension_value(certificate, OID_BASIC_CONSTRAINTS, SEQUENCE, "basicConstraints")
    if container is None:
        return None
    ca, path_length = False, None
    for item in container.children():
        if item.tag == BOOLEAN:
            ca = item.value != b"\x00"
        elif item.tag == INTEGER:
            path_length = int.from_bytes(item.value, "big", signed=True)
    if path_length is not None and path_length < 0:
        raise malformed("negative pathLenConstraint")
    return ca, path_length


def key_usage(certificate: RawCertificate) -> frozenset[str] | None:
    """The keyUsage bits set (RFC 5280 names), or None without the extension."""
    bits = _extension_value(certificate, OID_KEY_USAGE, 0x03, "keyUsage")
    if bits is None:
        return None
    if not bits.value:
        raise malformed("keyUsage is an empty BIT STRING")
    value = int.from_bytes(bits.value[1:], "big") if len(bits.value) > 1 else 0
    width = 8 * (len(bits.value) - 1)
    return frozenset(
        name
        for index, name in enumerate(_KEY_USAGE_BITS)
        if index < width and value >> (width - 1 - index) & 1
    )


def extended_key_usage(certificate: RawCertificate) -> tuple[str, ...] | None:
    """The extendedKeyUsage purpose OIDs, or None without the extension."""
    container = _extension_value(certificate, OID_EXTENDED_KEY_USAGE, SEQUENCE, "extendedKeyUsage")
    if container is None:
        return None
    return tuple(decode_oid(item) for item in read_all(container.value))


def _extension_value(certificate: RawCertificate, oid: str, tag: int, label: str) -> TLV | None:
    """The DER element an extension holds (it must have ``tag``), or None without the extension."""
    extension = certificate.extension(oid)
    if extension is None:
        return None
    element = read_one(extension.value)[0]
    if element.tag != tag:
        raise malformed(f"{label} is not the type RFC 5280 defines")
    return element
