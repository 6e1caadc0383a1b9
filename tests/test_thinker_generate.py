"""`omniref generate` end to end on the tiny checkpoint: ids printed equal a direct Thinker.generate run."""
import numpy as np
import pytest

from omniref.config import load_config
from omniref.generate import main
from omniref.thinker.model import Thinker, ThinkerPrompt
from omniref.thinker.prompt import Image, PromptIds, chat_prompt
from omniref.tiny import TINY_TOKEN_IDS, write_tiny_checkpoint
from omniref.vision.preprocess import preprocess_image
from omniref.weights import load_weights


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_generate"), seed=5)


def test_generate_cli_prints_the_greedy_ids(ckpt, tmp_path, capsys):
    img = np.random.default_rng(0).integers(0, 256, (70, 90, 3)).astype(np.uint8)
    from PIL import Image as PILImage
    PILImage.fromarray(img).save(tmp_path / "x.png")
    assert main(["--checkpoint", str(ckpt), "--image", str(tmp_path / "x.png"), "--prompt-ids", "40,41,42",
                 "--max-new-tokens", "4"]) == 0
    printed = [int(t) for t in capsys.readouterr().out.split()]
    cfg, w = load_config(ckpt), load_weights(ckpt)
    vc = cfg.thinker_config.vision_config
    vi = preprocess_image(tmp_path / "x.png", vc.patch_size, vc.spatial_merge_size)
    ids = chat_prompt(PromptIds.from_config(cfg, TINY_TOKEN_IDS["nl"]), [Image(vi.grid_thw[0]), [40, 41, 42]])
    res = Thinker(w, cfg).generate(ThinkerPrompt(input_ids=ids, pixel_values=vi.pixel_values,
                                                 image_grid_thw=vi.grid_thw), 4, eos_token_id=cfg.im_end_token_id)
    assert printed == res.generated_ids.tolist() and 1 <= len(printed) <= 4


def test_generate_cli_reports_bad_input(ckpt, capsys):
    from omniref import cli
    from omniref.errors import InputError, MediaError
    assert cli.main(["generate", "--checkpoint", str(ckpt), "--audio", "/nonexistent.wav"]) == MediaError.exit_code
    assert capsys.readouterr().err == "omniref generate: /nonexistent.wav: no such WAV file\n"
    assert cli.main(["generate", "--checkpoint", str(ckpt), "--prompt", "hi", "--top-p", "0"]) == InputError.exit_code
    assert "--top-p 0.0: expected a number in (0, 1]" in capsys.readouterr().err
