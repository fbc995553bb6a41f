#!/usr/bin/env bash
# Build the seed corpora in fuzz/corpus/<target>/ from the real SEV-SNP
# vectors (shared/vectors/snp, described by its vectors.json and README.md)
# and the real OVMF images (shared/firmware), and, for the targets whose
# seeds need the library's signatures and hashes, with examples/seeds.rs.
# The corpora are not committed (.gitignore); this script is how to get them.
#
# Usage: fuzz/seeds.sh            (from anywhere)
#   PROVENIX_SHARED  the shared folder; default ../shared beside the repository
#
# Needs bash, python3 (standard library only) and cargo. Idempotent: each
# seed is named by its content's SHA-1, the way libFuzzer names corpus files.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(dirname "$fuzz_dir")"
shared="${PROVENIX_SHARED:-$repo_root/../shared}"
vectors="$shared/vectors/snp"

if [[ ! -f "$vectors/vectors.json" ]]; then
    echo "seeds.sh: no vectors at $vectors (set PROVENIX_SHARED)" >&2
    exit 2
fi

python3 - "$vectors" "$fuzz_dir/corpus" <<'PY'
import base64
import hashlib
import json
import re
import struct
import sys
from pathlib import Path

vectors, corpus = Path(sys.argv[1]), Path(sys.argv[2])

REPORT_SIZE = 0x4A0  # ABI spec Table 23

# Certificate-table GUIDs (GHCB spec section 4.1.8.1), bytes in the order of
# the canonical string, as the kernel and QEMU write them.
GUID = {
    "vcek": "63da758d-e664-4564-adc5-f4b93be8accd",
    "vlek": "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
    "ask": "4ab7b379-bbac-4fe4-a02f-05aef327c782",
    "ark": "c0b406a4-a803-4952-9743-3fb6014cd0ae",
    "crl": "92f81bc3-5811-4d3d-97ff-d19f88dc67ea",
}

# Index into TIMES in fuzz_targets/chain.rs.
TIME_VCEK, TIME_VLEK, TIME_TODAY = 0, 1, 2

written = {}


def seed(target, data):
    out = corpus / target
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    written[target] = written.get(target, 0) + 1


def pem_or_der(raw):
    """The DER certificates in a PEM bundle, or the one DER certificate."""
    if raw[:1] == b"\x30":
        return [raw]
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", raw, re.S
    )
    return [base64.b64decode(b"".join(b.split())) for b in blocks]


def report_bytes(raw):
    """A report file: raw, or hex text (virtee-sev's report_milan.hex)."""
    if len(raw) == REPORT_SIZE:
        return raw
    data = bytes.fromhex(raw.decode().strip())
    assert len(data) == REPORT_SIZE, len(data)
    return data


def cert_table(entries, pad_to=0):
    """GHCB certificate table: 24-byte entries {GUID, u32 offset, u32
    length}, an all-zero terminator, then the entries' bytes in order."""
    header = (len(entries) + 1) * 24
    table, blob, offset = b"", b"", header
    for name, data in entries:
        table += bytes.fromhex(GUID[name].replace("-", ""))
        table += struct.pack("<II", offset, len(data))
        blob += data
        offset += len(data)
    out = table + bytes(24) + blob
    return out + bytes(max(0, pad_to - len(out)))


def chain_input(time, report, vek, chain):
    """fuzz_targets/chain.rs input: u8 time index, u16 report length,
    u16 VEK length, then the report, the VEK and the chain blob."""
    return struct.pack("<BHH", time, len(report), len(vek)) + report + vek + chain


for v in json.loads((vectors / "vectors.json").read_text()):
    files = {k: vectors / p for k, p in v["files"].items()}
    report = report_bytes(files["report"].read_bytes())
    (vek,) = pem_or_der(files["vek"].read_bytes())
    chain_raw = files["ca_chain"].read_bytes()
    # The AMD bundles hold the intermediate (ASK or ASVK), then the ARK.
    ask, ark = pem_or_der(chain_raw)
    vlek = v["signing_key"] == "VLEK"
    time = TIME_VLEK if vlek else TIME_VCEK

    # snp_report: the report as the hardware produced it.
    seed("snp_report", report)

    # cert_table: what an extended report would carry with this report.
    key = "vlek" if vlek else "vcek"
    seed("cert_table", cert_table([(key, vek), ("ask", ask), ("ark", ark)]))
    seed("cert_table", cert_table([(key, vek)]))
    seed("cert_table", cert_table([("ark", ark), ("ask", ask), (key, vek)], pad_to=0x4000))

    # chain: the chain as PEM, as one DER certificate (the intermediate; the
    # ARK then comes from the embedded anchors), and absent.
    seed("chain", chain_input(time, report, vek, chain_raw))
    seed("chain", chain_input(time, report, vek, ask))
    seed("chain", chain_input(time, report, vek, b""))
    # Outside the validity window: the Expired paths.
    seed("chain", chain_input(TIME_TODAY, report, vek, b""))

# Small hand-made tables for the parser's edges.
seed("cert_table", bytes(24))  # terminator only
seed("cert_table", cert_table([("crl", b"\x30\x00")]))
seed("cert_table", cert_table([("vcek", b"\x01")]).replace(
    bytes.fromhex(GUID["vcek"].replace("-", "")), bytes(range(16))))  # unknown GUID

for target, n in sorted(written.items()):
    print(f"{target}: {n} seeds written to {corpus / target}")
PY

# ovmf: the end of each firmware image, where its footer table and SEV
# metadata are (fuzz_targets/ovmf.rs pads the input at the front to whole
# pages): the last 64 KiB, and the last page alone.
python3 - "$shared/firmware" "$fuzz_dir/corpus/ovmf" <<'PY'
import hashlib
import lzma
import sys
from pathlib import Path

firmware, out = Path(sys.argv[1]), Path(sys.argv[2])
images = sorted(firmware.glob("*.fd.xz"))
if not images:
    sys.exit(f"seeds.sh: no firmware images in {firmware}")
out.mkdir(parents=True, exist_ok=True)
written = 0
for image in images:
    data = lzma.decompress(image.read_bytes())
    for tail in (data[-0x10000:], data[-0x1000:]):
        (out / hashlib.sha1(tail).hexdigest()).write_bytes(tail)
        written += 1
print(f"ovmf: {written} seeds written to {out}")
PY

# checkpoint, statement, merkle: signed notes and statements, and proofs.
cargo run --quiet --manifest-path "$fuzz_dir/Cargo.toml" --example seeds -- "$fuzz_dir/corpus"

# eventlog: every real TCG event log in shared/vectors/tpm (its vectors.json
# and README.md say where each is from), as Linux exports them.
python3 - "$shared/vectors/tpm" "$fuzz_dir/corpus/eventlog" <<'PY'
import hashlib
import sys
from pathlib import Path

vectors, out = Path(sys.argv[1]), Path(sys.argv[2])
logs = sorted(vectors.glob("*/eventlog*.bin"))
if not logs:
    sys.exit(f"seeds.sh: no event logs in {vectors}")
out.mkdir(parents=True, exist_ok=True)
for log in logs:
    data = log.read_bytes()
    (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
print(f"eventlog: {len(logs)} seeds written to {out}")
PY

# tpm_structures: the real TPM structures and HCL reports in
# shared/vectors/tpm, each behind the selector byte of its parser (see
# fuzz_targets/tpm_structures.rs): 0 TPMS_ATTEST, 1 TPM2B_ATTEST,
# 2 TPMT_SIGNATURE, 3 TPMT_PUBLIC, 4 TPM2B_PUBLIC, 5 HCL report.
python3 - "$shared/vectors/tpm" "$fuzz_dir/corpus/tpm_structures" <<'PY'
import base64
import hashlib
import json
import struct
import sys
from pathlib import Path

vectors, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
written = 0


def seed(selector, data):
    global written
    blob = bytes([selector]) + data
    (out / hashlib.sha1(blob).hexdigest()).write_bytes(blob)
    written += 1


def sized(data):
    return struct.pack(">H", len(data)) + data


gcp = vectors / "gcp-windows-shielded-vm-quote"
attest = (gcp / "quote_tpms_attest.bin").read_bytes()
public = (gcp / "ak_tpmt_public.bin").read_bytes()
seed(0, attest)
seed(1, sized(attest))
seed(2, (gcp / "quote_tpmt_signature.bin").read_bytes())
seed(3, public)
seed(4, sized(public))
ak = json.loads((gcp / "windows_gcp_shielded_vm.json").read_text())["AK"]
seed(0, base64.b64decode(ak["CreateAttestation"]))  # TPM_ST_ATTEST_CREATION
seed(2, base64.b64decode(ak["CreateSignature"]))

azure = vectors / "azure-cvm-hcl-report-and-vtpm-quote"
quote = (azure / "quote.bin").read_bytes()
# quote.bin: u64le length + signature, u64le length + TPMS_ATTEST, PCRs.
(sig_len,) = struct.unpack_from("<Q", quote, 0)
(attest_len,) = struct.unpack_from("<Q", quote, 8 + sig_len)
start = 16 + sig_len
seed(0, quote[start:start + attest_len])
seed(2, struct.pack(">HH", 0x0014, 0x000B) + sized(quote[8:8 + sig_len]))
for name in ("hcl-report-snp.bin", "hcl-report-tdx.bin"):
    seed(5, (azure / name).read_bytes())
print(f"tpm_structures: {written} seeds written to {out}")
PY
