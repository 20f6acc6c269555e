"""Regenerate schema_pb2.py / ext_pb2.py (+ .pyi) from the .proto files next to this module.

Run `make proto` (= `python -m rtvi.core.bus.schema._generate`). It needs the pinned grpcio-tools of the
test extras, whose bundled protoc makes the output byte-for-byte reproducible; a unit test checks that
the committed modules equal a fresh generation. The generated code is committed so the service needs
only the protobuf runtime, never protoc.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("schema.proto", "ext.proto")
PACKAGE = "rtvi.core.bus.schema"


def generate(out_dir: Path) -> list[Path]:
    """Compile the protos into out_dir; returns the files written."""
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = str(files("grpc_tools") / "_proto")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{HERE}", f"-I{well_known}", f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    if protoc.main([*args, *PROTOS]) != 0:
        raise RuntimeError("protoc failed")
    written: list[Path] = []
    for proto in PROTOS:
        for suffix in ("_pb2.py", "_pb2.pyi"):
            path = out_dir / proto.replace(".proto", suffix)
            # protoc writes `import schema_pb2` (a top-level module); ours lives in a package.
            text = re.sub(
                r"^import (\w+_pb2) as", rf"from {PACKAGE} import \1 as", path.read_text(), flags=re.MULTILINE
            )
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(p)
