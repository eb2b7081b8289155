"""STAND-IN for SmolVLM-256M-Instruct, not SmolVLM: a tiny, randomly initialised Idefics3
model directory with SmolVLM's processor behaviour, for the gate's text-VLM path
(config/hf_vlm.yaml) without the real weights.

What it shares with HuggingFaceTB/SmolVLM-256M-Instruct: the Idefics3 architecture and
processor; image splitting on (each image becomes a grid of tiles plus a global image, so
the pixel_values shape depends on the image -- the gate needs model.image_size to fix it);
SmolVLM's special tokens (<|im_start|>, <image>, <fake_token_around_image>, <global-img>,
<end_of_utterance>, <row_i_col_j>); mean = std = 0.5 normalisation. Sizes are scaled down:
a 64 x 64 vision encoder (patch 8, scale factor 2: 16 image tokens) instead of 512 x 512.
Its answers are random words: it tests the pipeline, not the task.

    python tests/ros_peers/idefics3_standin.py /tmp/smolvlm_standin
then run the gate with config/hf_vlm.yaml, model.path: /tmp/smolvlm_standin and
model.image_size: 64 (the stand-in's vision encoder size).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import transformers

IMAGE_SIZE = 64  # the stand-in's vision encoder resolution (SmolVLM's: 512)
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<image>", "<fake_token_around_image>", "<global-img>",
           "<end_of_utterance>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
WORDS = ["User:", "Assistant:", "go", "forward", "turn", "left", "right", "stop", "halt", "to", "the", "red", "box"]


def _processor() -> transformers.Idefics3Processor:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=SPECIAL[4:],
        extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                              "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"})
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 4 * IMAGE_SIZE},
                                                max_image_size={"longest_edge": IMAGE_SIZE},
                                                image_mean=[0.5] * 3, image_std=[0.5] * 3, do_image_splitting=True)
    return transformers.Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16)


def _model() -> transformers.Idefics3ForConditionalGeneration:
    vision = transformers.Idefics3VisionConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32,
                                               intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = transformers.LlamaConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                    max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = transformers.Idefics3Config(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                         image_token_id=SPECIAL.index("<image>"), scale_factor=2)
    torch.manual_seed(0)
    return transformers.Idefics3ForConditionalGeneration(config).eval()


def build(out: str | Path) -> Path:
    """Write the stand-in model directory to `out` and return it."""
    out = Path(out)
    _model().save_pretrained(out)
    _processor().save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {Path(__file__).name} OUTPUT_DIR")
    print(build(sys.argv[1]))
