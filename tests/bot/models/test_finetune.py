"""`dialobot train`: exported conversations in, a model directory out that chats, quantizes and loads INT8."""

import json

import pytest

from bot.cli import main
from bot.config import ModelConfig, parse_config
from bot.generation.backends.torch import TorchGenerator
from bot.models.finetune import META_FILE
from bot.models.loader import load_model

TOPICS = [
    ("do you like dogs?", "i love dogs, i have a golden retriever named max"),
    ("what about cats?", "cats are fine but dogs are my favorite"),
    ("where do you walk him?", "we walk in the park by the river every morning"),
    ("nice, how old is he?", "he is three years old and loves to swim"),
]


def export(tmp_path, conversations=6, name="export.jsonl"):
    """A `dialobot history export` file: several conversations an hour apart, two people and the bot."""
    lines = []
    for c in range(conversations):
        for t, (question, answer) in enumerate(TOPICS):
            for offset, (role, author, text) in enumerate(
                [("user", f"u{c % 3}", question), ("bot", None, "ok"), ("user", "u9", answer)]
            ):
                lines.append(
                    json.dumps(
                        {
                            "channel": f"discord:1:{c % 2}",
                            "role": role,
                            "author_id": author,
                            "text": text,
                            "created_at": f"2026-01-01T{c + 1:02d}:{t * 3 + offset:02d}:00+00:00",
                        }
                    )
                )
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def train(*args):
    return main(["train", *map(str, args), "--threads", "1", "--no-progress"])


def test_train_lowers_held_out_loss_and_the_result_chats_in_int8(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    assert train(export(tmp_path), "--model", tiny_model_dir, "--out", out, "--epochs", "8") == 0
    printed = capsys.readouterr().out
    assert "6 conversations" in printed and "by 4 authors" in printed
    assert "forget me" in printed
    meta = json.loads((out / META_FILE).read_text())
    assert meta["finished"] and meta["heldout_conversations"] >= 1
    assert meta["heldout_loss_after"] < meta["heldout_loss_before"]
    loaded = load_model(ModelConfig(name=str(out), quantization="int8", threads=1))
    assert loaded.info.projections.int8 == loaded.info.projections.total
    settings = parse_config({"generation": {"do_sample": False, "max_new_tokens": 12}}).generation
    reply = TorchGenerator(loaded, settings).generate_sync(["do you like dogs?"])
    assert reply.strip()


def test_train_output_quantizes_and_converts_to_ctranslate2(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2")
    from bot.generation.backends.ctranslate2 import load_ctranslate2

    out = tmp_path / "mine"
    assert train(export(tmp_path, 3), "--model", tiny_model_dir, "--out", out, "--epochs", "1") == 0
    assert main(["quantize", "--model", str(out), "--out", str(tmp_path / "int8")]) == 0
    assert load_model(ModelConfig(name=str(tmp_path / "int8"), threads=1)).info.quantization == "int8"
    monkeypatch.setenv("DIALOBOT_CACHE_DIR", str(tmp_path / "cache"))
    config = parse_config(
        {
            "model": {"name": str(out), "backend": "ctranslate2", "threads": 1},
            "generation": {"max_new_tokens": 8},
        }
    )
    generator = load_ctranslate2(config)
    assert isinstance(generator.generate_sync(["hello"]), str)


def test_train_refuses_to_overwrite_unless_forced(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    data = export(tmp_path, 3)
    assert train(data, "--model", tiny_model_dir, "--out", out, "--epochs", "1") == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert train(data, "--model", tiny_model_dir, "--out", out, "--epochs", "1", "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_ctrl_c_keeps_the_last_finished_epoch(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import bot.models.trainer as trainer

    real_step = trainer.torch.nn.utils.clip_grad_norm_
    out = tmp_path / "mine"

    def interrupt_in_the_second_epoch(*args, **kwargs):
        if (out / META_FILE).exists():  # the first epoch's checkpoint is written: Ctrl-C now
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer.torch.nn.utils, "clip_grad_norm_", interrupt_in_the_second_epoch)
    data = export(tmp_path)
    args = [
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--block-size",
        "64",
    ]
    assert train(data, *args) == 130
    assert "checkpoint after epoch 1" in capsys.readouterr().out
    meta = json.loads((out / META_FILE).read_text())
    assert meta["epochs_done"] == 1 and not meta["finished"]
    assert load_model(ModelConfig(name=str(out), quantization="none", threads=1)).info.parameters > 0

    other = tmp_path / "other"
    monkeypatch.setattr(
        trainer.torch.nn.utils, "clip_grad_norm_", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
    )
    assert train(data, "--model", tiny_model_dir, "--out", other) == 130
    assert "nothing written" in capsys.readouterr().out
    assert not other.exists()


def test_chitchat_format_input_and_max_minutes(tiny_model_dir, tmp_path, capsys):
    data = {
        f"c{i}": {
            "messages": [
                [{"text": q, "sender": "a"}],
                [{"text": a, "sender": "b"}],
            ]
        }
        for i, (q, a) in enumerate(TOPICS)
    }
    path = tmp_path / "chats.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "mine"
    assert (
        train(path, "--model", tiny_model_dir, "--out", out, "--epochs", "50", "--max-minutes", "0.0001") == 0
    )
    printed = capsys.readouterr().out
    assert "4 conversations" in printed and "by 2 authors" in printed
    assert "stopped at --max-minutes" in printed
    assert json.loads((out / META_FILE).read_text())["stopped"] == "time"
