"""INT8 quantization: every GPT-2 projection becomes a dynamic INT8 linear, and the answers barely change."""

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from bot.models.corpus import load_chitchat, split_conversations
from bot.models.quantize import count_projections, linear_from_conv1d, quantize_int8, replace_conv1d


def small_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def test_linear_from_conv1d_is_exact():
    torch.manual_seed(0)
    conv = Conv1D(24, 16)
    nn.init.normal_(conv.bias)
    x = torch.randn(3, 5, 16)
    assert torch.equal(linear_from_conv1d(conv)(x), conv(x))


def test_replacing_conv1d_keeps_the_model_output_identical():
    model = small_gpt2()
    ids = torch.randint(0, 100, (2, 12))
    before = model(ids).logits
    assert replace_conv1d(model) == 8  # c_attn, c_proj, c_fc, mlp c_proj in each of 2 blocks
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert torch.equal(model(ids).logits, before)


def test_every_projection_becomes_dynamic_int8():
    model = small_gpt2()
    assert count_projections(model).int8 == 0
    quantize_int8(model)
    counts = count_projections(model)
    assert counts.total == 9  # 8 block projections + lm_head
    assert counts.int8 == counts.total
    quantized = [m for m in model.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert len(quantized) == 9
    assert all(m.weight().dtype == torch.qint8 for m in quantized)


def test_int8_picks_the_same_next_token_as_fp32_at_most_positions(tiny_model_dir):
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    int8 = quantize_int8(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    heldout = split_conversations(load_chitchat(), "heldout")[:20]
    same = total = 0
    with torch.inference_mode():
        for conversation in heldout:
            text = tokenizer.eos_token.join(conversation.turns[:8]) + tokenizer.eos_token
            ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]
            a = fp32(ids).logits.argmax(-1)
            b = int8(ids).logits.argmax(-1)
            same += int((a == b).sum())
            total += a.numel()
    assert total > 500
    assert same / total >= 0.9, f"INT8 agreed with FP32 on only {same}/{total} positions"
