"""Regenerate schema_pb2.py / ext_pb2.py (+ .pyi) from the .proto files next to this module.

Run `make proto` (= `python -m rtvi.core.bus.schema._generate`). It needs the pinned grpcio-tools of the
test extras, whose bundled protoc makes the output byte-for-byte reproducible; a unit test checks that
the committed modules equal a fresh generation. The generated code is committed so the service needs
only the protobuf runtime, never protoc.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[3]  # the directory holding the rtvi package
PROTOS = ("schema.proto", "ext.proto")
PACKAGE = "rtvi.core.bus.schema"
# The protos are compiled under their package path, so the descriptor pool knows them as
# rtvi/core/bus/schema/schema.proto: a bare "schema.proto" clashes with other libraries' (pymilvus has one).
PROTO_DIR = PACKAGE.replace(".", "/")


def generate(out_dir: Path) -> list[Path]:
    """Compile the protos into out_dir; returns the files written."""
    import tempfile
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = str(files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{SRC}", f"-I{well_known}", f"--python_out={tmp}", f"--pyi_out={tmp}"]
        if protoc.main([*args, *(f"{PROTO_DIR}/{p}" for p in PROTOS)]) != 0:
            raise RuntimeError("protoc failed")
        for proto in PROTOS:
            for suffix in ("_pb2.py", "_pb2.pyi"):
                name = proto.replace(".proto", suffix)
                path = out_dir / name
                path.write_text((Path(tmp) / PROTO_DIR / name).read_text())
                written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
