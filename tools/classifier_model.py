"""A BERT checkpoint directory rewritten as a BertForSequenceClassification (or
BertForTokenClassification) one: the encoder under "bert.", `classifier.weight` and
`classifier.bias` beside it, config.json naming the architecture (and the labels, the problem
type, any other keys given). The tests and the GPU kit's serving check serve such models to
cover the logits heads.
"""
import json
import pathlib

from safetensors_io import read_safetensors, write_safetensors


def write_classifier_model(out_dir, model_dir, weight, bias, labels=None, problem_type=None,
                           extra_config=None, architecture="BertForSequenceClassification"):
    """Writes `model_dir`'s encoder with the classifier (`weight` [num_labels, hidden], `bias`
    [num_labels], float32 arrays) into `out_dir` (created if needed); returns `out_dir`."""
    out_dir, model_dir = pathlib.Path(out_dir), pathlib.Path(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"bert.{name}": value
               for name, value in read_safetensors(model_dir / "model.safetensors").items()}
    tensors["classifier.weight"] = weight
    tensors["classifier.bias"] = bias
    write_safetensors(out_dir / "model.safetensors", tensors)
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = [architecture]
    if labels is not None:
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
    if problem_type is not None:
        config["problem_type"] = problem_type
    config.update(extra_config or {})
    (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir
