"""The checked-in generated gRPC code is what the .proto gives today: regenerate and compare.

Without this, an edit to proto/ that nobody regenerated would ship a service whose wire format
(and reflection) silently disagrees with its own definition.
"""

from __future__ import annotations

from pathlib import Path

from agent.status.grpc_gen import generate, status_pb2


def test_generated_code_is_current(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.GENERATED)
    for name in generate.GENERATED:
        fresh = (tmp_path / name).read_text()
        checked_in = (generate.OUT_DIR / name).read_text()
        assert fresh == checked_in, (
            f"agent/status/grpc_gen/{name} is stale: run "
            "`python -m agent.status.grpc_gen.generate` and commit"
        )


def test_generated_code_imports_as_part_of_the_package() -> None:
    # The relative import made by generate.py: the stub module finds its messages.
    from agent.status.grpc_gen import status_pb2_grpc

    assert status_pb2_grpc.FabricStatusStub is not None
    service = status_pb2.DESCRIPTOR.services_by_name["FabricStatus"]
    assert service.full_name == "kube_fabric_agent.v1.FabricStatus"
    assert status_pb2.DESCRIPTOR.name == "kube_fabric_agent/v1/status.proto"
    assert [m.name for m in service.methods] == [
        "GetStatus", "ListAttachments", "ListRoutes", "ListVteps", "GetHeadroom", "ListServices",
        "Locate", "WatchEvents",
    ]


def test_a_stale_file_is_detected(tmp_path: Path) -> None:
    # The comparison above can fail: a proto with one more field gives different code.
    proto_root = tmp_path / "proto"
    source = generate.PROTO_ROOT / generate.PROTO_FILE
    target = proto_root / generate.PROTO_FILE
    target.parent.mkdir(parents=True)
    target.write_text(source.read_text().replace(
        "message GetStatusRequest {}", "message GetStatusRequest {\n  bool verbose = 1;\n}"
    ))
    out = tmp_path / "out"
    generate.generate(out, proto_root)
    assert (out / "status_pb2.py").read_text() != (generate.OUT_DIR / "status_pb2.py").read_text()
