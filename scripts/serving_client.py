"""What TF Serving's REST API does with a row-format request, in a process that never imports kemdy_tf.

    python scripts/serving_client.py JOB.json RESULT.json

JOB: {"export": version folder, "import_tf_text": bool, "requests": [REST bodies],
"inspect": {name: [export, signature]}}. Each instance is a dict of named inputs;
values are stacked per input (a ragged waveform fails, as in TF Serving), strings
become UTF-8 bytes, numbers take the signature's dtype; each response is
{"predictions": [one dict per instance]}. RESULT also lists which of kemdy_tf,
tensorflow_text, keras_hub got imported, the TensorFlow (and TF Text) versions, and
for each `inspect` entry the op types its signature reaches that bare TensorFlow does
not register. Needs only TensorFlow (and TF Text with "import_tf_text"): the tests run
it in this project's environment and in TF Serving 2.20's (tests/test_tf_serving_compat.py).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry


def to_tensors(signature, instances):
    specs = signature.structured_input_signature[1]
    if any(set(inst) != set(specs) for inst in instances):
        raise ValueError(f"each instance needs exactly the inputs {sorted(specs)}")
    tensors = {}
    for name, spec in specs.items():
        values = [inst[name] for inst in instances]
        if spec.dtype == tf.string:
            values = [v.encode("utf-8") for v in values]
            tensors[name] = tf.constant(values, tf.string)
        else:
            tensors[name] = tf.constant(np.array(values, dtype=spec.dtype.as_numpy_dtype))
    return tensors


def to_json(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.tolist() if hasattr(value, "tolist") else value


def foreign_ops(path, signature_name):
    """Op types reachable from a signature that bare TensorFlow does not register."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    graph = saved.meta_graphs[0].graph_def
    library = {f.signature.name: f for f in graph.library.function}
    nodes = {n.name: n for n in graph.node}
    todo = [nodes[t.name.split(":")[0]] for t in saved.meta_graphs[0].signature_def[signature_name].outputs.values()]
    seen, ops = set(), set()
    while todo:
        node = todo.pop()
        ops.add(node.op)
        called = [node.op] + [a.func.name for a in node.attr.values() if a.func.name]
        called += [f.name for a in node.attr.values() for f in a.list.func]
        for name in called:
            if name in library and name not in seen:
                seen.add(name)
                todo.extend(library[name].node_def)
    return sorted(op for op in ops if op not in library and op_def_registry.get(op) is None)


def main(job: dict) -> dict:
    if job["import_tf_text"]:
        import tensorflow_text  # noqa: F401  registers the SentencePiece ops serving_default uses
    loaded = tf.saved_model.load(job["export"])
    responses = []
    for body in job["requests"]:
        signature = loaded.signatures[body.get("signature_name", "serving_default")]
        outputs = signature(**to_tensors(signature, body["instances"]))
        outputs = {k: v.numpy() for k, v in outputs.items()}
        batch = len(body["instances"])
        responses.append({"predictions": [{k: to_json(v[i]) for k, v in outputs.items()} for i in range(batch)]})
    return {
        "responses": responses,
        "modules": sorted(m for m in ("kemdy_tf", "tensorflow_text", "keras_hub") if m in sys.modules),
        "foreign_ops": {name: foreign_ops(path, sig) for name, (path, sig) in job.get("inspect", {}).items()},
        "versions": {"tensorflow": tf.__version__,
                     "tensorflow_text": sys.modules["tensorflow_text"].__version__ if job["import_tf_text"] else None},
    }


if __name__ == "__main__":
    with open(sys.argv[2], "w") as out:
        json.dump(main(json.load(open(sys.argv[1]))), out)
