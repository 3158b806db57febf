"""Graph audits of exported models: LiteRT ops and XNNPACK delegation, ONNX op shape,
OpenVINO ops and the precision its CPU plugin computes in."""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

# Type conversions at the graph boundary (uint8 camera frames in, float scores
# out) that XNNPACK leaves to the builtin kernels; they do not split the graph.
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclasses.dataclass
class LiteRTAudit:
    """What is in a `.tflite` file and what XNNPACK runs of it.

    Attributes:
        ops: Count of each operator in the file (all subgraphs).
        custom_ops: Custom and Flex (Select TF) operators; any is a failure.
        partitions: Number of XNNPACK partitions in the primary subgraph.
        delegated: Number of operators XNNPACK took over.
        undelegated: `(op, operand dtypes, at the graph boundary)` of each
            operator left to the builtin CPU kernels.
        expected_undelegated: Operators the export chose to leave to the
            builtin kernels (e.g. int8 `HARD_SWISH` for accuracy): listed,
            but not a failure.
    """

    ops: dict[str, int]
    custom_ops: list[str]
    partitions: int
    delegated: int
    undelegated: list[tuple[str, tuple[str, ...], bool]]
    expected_undelegated: tuple[str, ...] = ()

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.custom_ops:
            problems.append(
                f"custom/Flex ops {sorted(set(self.custom_ops))}: the graph needs the "
                "TensorFlow runtime (Select TF ops) or a custom op library"
            )
        inner = [op for op in self.undelegated if not op[2]]
        # Ops left out on purpose split the graph too: then the partitions are expected.
        unexpected = [op for op in inner if op[0] not in self.expected_undelegated]
        if unexpected or (self.partitions > 1 and not inner):
            names = collections.Counter(
                f"{name}({'/'.join(types)})" for name, types, _ in unexpected)
            problems.append(
                f"partial XNNPACK delegation: {self.partitions} partitions, "
                f"{len(unexpected)} ops left to builtin kernels {dict(names)}"
            )
        elif self.partitions == 0:
            problems.append("XNNPACK delegated nothing")
        return problems

    def summary(self) -> str:
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(self.ops.items()))
        lines = [
            f"ops: {ops}",
            f"XNNPACK: {self.delegated} of {self.delegated + len(self.undelegated)} ops "
            f"in {self.partitions} partition(s)",
        ]
        for (name, types, boundary), count in collections.Counter(self.undelegated).items():
            where = " at the graph boundary" if boundary else ""
            lines.append(f"  not delegated: {name}({'/'.join(types)}) x{count}{where}")
        return "\n".join(lines)


def _opcode_names(content: bytes) -> tuple[dict[str, int], list[str]]:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(content, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in BuiltinCode; the deprecated field saturates.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append("CUSTOM:" + (code.CustomCode() or b"?").decode())
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    counts: collections.Counter[str] = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            counts[codes[subgraph.Operators(o).OpcodeIndex()]] += 1
    custom = [name.split(":", 1)[1] for name in counts if name.startswith("CUSTOM:")]
    return dict(counts), custom


def audit_litert(model: str | os.PathLike | bytes) -> LiteRTAudit:
    """Lists the ops of a LiteRT model and finds which ones XNNPACK runs.

    The ops are read from the flatbuffer. Delegation is read from the
    `ai-edge-litert` interpreter after it has applied its default XNNPACK
    delegate: each delegate node stands for one partition, and the original
    nodes between its inputs and outputs are the ones it replaced.

    Args:
        model: Path of a `.tflite` file or its bytes.

    Returns:
        A `LiteRTAudit`.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        content = model
    else:
        with open(model, "rb") as f:
            content = f.read()
    ops, custom = _opcode_names(content)
    if custom:  # the interpreter cannot even load these
        return LiteRTAudit(ops, custom, partitions=0, delegated=0, undelegated=[])

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()
    original = [n for n in nodes if n["op_name"] != "DELEGATE"]
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    producer = {t: n["index"] for n in original for t in n["outputs"]}
    delegated: set[int] = set()
    for node in delegates:
        boundary, stack = set(node["inputs"]), list(node["outputs"])
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer:
                continue
            index = producer[tensor]
            if index not in delegated:
                delegated.add(index)
                stack.extend(nodes[index]["inputs"])
    graph_io = {d["index"] for d in interpreter.get_input_details()}
    graph_io |= {d["index"] for d in interpreter.get_output_details()}
    undelegated = [
        (
            n["op_name"],
            tuple(getattr(t, "__name__", str(t)) for t in n["operand_types"]),
            n["op_name"] in BOUNDARY_OPS and bool(graph_io & {*n["inputs"], *n["outputs"]}),
        )
        for n in original
        if n["index"] not in delegated
    ]
    return LiteRTAudit(ops, [], len(delegates), len(delegated), undelegated)


@dataclasses.dataclass
class OnnxAudit:
    """The op make-up of an ONNX graph, checked against what a clean export needs.

    Attributes:
        ops: Count of each op type.
        opset: The default-domain opset.
        max_transposes: How many `Transpose` nodes are acceptable.
        input_ops: The op types from the input to the first `Conv`, that one
            included (only as far as each output has a single reader).
    """

    ops: dict[str, int]
    opset: int
    max_transposes: int = 1
    input_ops: tuple[str, ...] = ()

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.ops.get("Transpose", 0) > self.max_transposes:
            problems.append(
                f"{self.ops['Transpose']} Transpose nodes (at most {self.max_transposes} expected)"
            )
        if self.ops.get("BatchNormalization"):
            problems.append(f"{self.ops['BatchNormalization']} unfolded BatchNormalization nodes")
        return problems

    def summary(self) -> str:
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(self.ops.items()))
        head = f"; input: {' -> '.join(self.input_ops)}" if self.input_ops else ""
        return f"opset {self.opset}; ops: {ops}{head}"


def _onnx_input_ops(graph) -> tuple[str, ...]:
    """The op types from the graph's first input to its first `Conv`, through single readers."""
    ops, current = [], graph.input[0].name
    while not ops or ops[-1] != "Conv":
        readers = [node for node in graph.node if current in node.input]
        if len(readers) != 1:
            break
        ops.append(readers[0].op_type)
        current = readers[0].output[0]
    return tuple(ops)


def audit_onnx(model, max_transposes: int = 1) -> OnnxAudit:
    """Counts the op types of an ONNX model.

    Args:
        model: Path of a `.onnx` file or a loaded `onnx.ModelProto`.
        max_transposes: Acceptable `Transpose` count: 1 for an NHWC input
            (one layout change before the first convolution), 0 for NCHW.

    Returns:
        An `OnnxAudit`.
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    counts = collections.Counter(node.op_type for node in model.graph.node)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxAudit(dict(counts), opset, max_transposes, _onnx_input_ops(model.graph))


# What the CPU plugin may compute convolutions in, per `export_openvino` precision.
_OPENVINO_CONV_PRECISIONS = {"f32": {"f32"}, "bf16": {"bf16"}, "int8": {"u8", "i8"}}
# Convolutions of pooled (1x1) inputs: squeeze-excitation, PP-LCNet's last conv. NNCF's
# SE_BLOCK ignored pattern leaves SE convolutions in float; they cost little.
_OPENVINO_POOLED_PRECISIONS = {**_OPENVINO_CONV_PRECISIONS, "int8": {"u8", "i8", "f32"}}
# Ops that betray an unfolded batch norm (MVN: a normalization left as such).
_OPENVINO_UNFOLDED = ("BatchNormInference", "MVN")


@dataclasses.dataclass
class OpenVINOAudit:
    """The op make-up of an OpenVINO IR and the precision its convolutions run in.

    Attributes:
        ops: Count of each op type in the IR (constants, inputs and outputs left out).
        precision: The IR's precision as `export_openvino` stored it (`"f32"`
            for other IRs).
        conv_precisions: Count of the compute precisions (`"f32"`, `"bf16"`,
            `"u8"`, ...) of the convolutions of feature maps in the model
            compiled with `Runtime`'s settings.
        pooled_conv_precisions: The same for convolutions of pooled (1x1)
            inputs, which int8 IRs may keep in float.
        max_transposes: How many `Transpose` ops are acceptable.
        decomposed_activations: `Clamp` ops of `x + 3`: an h-swish or hard
            sigmoid spelled `relu6(x + 3)` instead of a native `HSwish` /
            `HSigmoid`. Other `Clamp`s are ReLU6s (MobileNetV2's, after a
            convolution's bias `Add`).
    """

    ops: dict[str, int]
    precision: str
    conv_precisions: dict[str, int]
    pooled_conv_precisions: dict[str, int] = dataclasses.field(default_factory=dict)
    max_transposes: int = 1
    decomposed_activations: int = 0

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.ops.get("Transpose", 0) > self.max_transposes:
            problems.append(
                f"{self.ops['Transpose']} Transpose ops (at most {self.max_transposes} expected)")
        unfolded = {op: self.ops[op] for op in _OPENVINO_UNFOLDED if op in self.ops}
        if unfolded:
            problems.append(f"batch norm not folded into the convolutions: {unfolded}")
        if self.decomposed_activations:
            problems.append(f"{self.decomposed_activations} Clamp ops of x + 3: h-swish / "
                            "hard-sigmoid decomposed, not native HSwish / HSigmoid")
        if self.precision == "int8" and not self.ops.get("FakeQuantize"):
            problems.append("an int8 IR without FakeQuantize ops: nothing was quantized")
        for kind, counts, allowed in (
            ("convolutions", self.conv_precisions, _OPENVINO_CONV_PRECISIONS),
            ("convolutions of pooled inputs", self.pooled_conv_precisions,
             _OPENVINO_POOLED_PRECISIONS),
        ):
            expected = allowed[self.precision]
            off = {p: n for p, n in counts.items() if p not in expected}
            if off:
                problems.append(f"{kind} computed in {off}, expected {sorted(expected)} "
                                f"for a {self.precision} IR")
        return problems

    def summary(self) -> str:
        def listed(counts: dict[str, int]) -> str:
            return ", ".join(f"{p} x{n}" for p, n in sorted(counts.items())) or "none"

        ops = ", ".join(f"{name} x{count}" for name, count in sorted(self.ops.items()))
        return (f"ops: {ops}\nCPU plugin ({self.precision} IR): convolutions in "
                f"{listed(self.conv_precisions)}; of pooled inputs in "
                f"{listed(self.pooled_conv_precisions)}")


def _adds_three(node) -> bool:
    """Whether an OpenVINO node is `x + 3` (a folded batch norm's bias `Add` is not)."""
    if node.get_type_name() != "Add":
        return False
    for value in node.input_values():
        source = value.get_node()
        if source.get_type_name() == "Constant":
            data = source.get_data()
            return data.size > 0 and bool(np.all(data == 3.0))
    return False


def audit_openvino(model: str | os.PathLike, max_transposes: int = 1) -> OpenVINOAudit:
    """Counts the op types of an OpenVINO IR and compiles it to see what its convolutions run in.

    The IR is compiled for the CPU with the settings `Runtime` uses (its
    stored precision as `INFERENCE_PRECISION_HINT`), and the compute
    precision of each convolution is read from the compiled runtime model.

    Args:
        model: Path of an `.xml` file.
        max_transposes: Acceptable `Transpose` count: 1 for an NHWC input
            (the layout change before the first convolution).

    Returns:
        An `OpenVINOAudit`.
    """
    import openvino as ov

    from keras_lcnet.deploy.runtime import openvino_config, openvino_precision

    core = ov.Core()
    ir = core.read_model(os.fspath(model))
    structural = ("Constant", "Parameter", "Result")
    ops = collections.Counter(
        op.get_type_name() for op in ir.get_ordered_ops() if op.get_type_name() not in structural)
    decomposed = sum(op.get_type_name() == "Clamp" and _adds_three(op.input_value(0).get_node())
                     for op in ir.get_ordered_ops())
    precision = openvino_precision(ir)
    compiled = core.compile_model(ir, "CPU", openvino_config(precision, 1))
    maps: collections.Counter[str] = collections.Counter()
    pooled: collections.Counter[str] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) != "Convolution":
            continue
        shape = op.input(0).get_partial_shape()  # the runtime model's is NCHW
        spatial = [d.get_length() for d in list(shape)[2:] if d.is_static]
        counts = pooled if spatial and max(spatial) == 1 else maps
        counts[info["runtimePrecision"].astype(str)] += 1
    return OpenVINOAudit(dict(ops), precision, dict(maps), dict(pooled), max_transposes,
                         decomposed)
