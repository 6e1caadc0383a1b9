"""The vision arrow: pixels -> patches (`preprocess`) -> visual tokens + DeepStack features (`encoder`).

    from omniref.vision import preprocess_image, encode_vision
    x = preprocess_image("photo.jpg", patch_size=16, merge_size=2)            # x.pixel_values [P, 1536]
    tokens, deepstack = encode_vision(weights.scope("thinker.visual."), vision_config,
                                      x.pixel_values, x.grid_thw)             # [P/4, out_hidden], [k x same]
"""
from .encoder import VisionOutput, encode_vision, vision_forward
from .preprocess import (VisionInputs, load_image, preprocess_image, preprocess_video, sample_frame_indices,
                         seconds_per_grid, smart_resize)

__all__ = ["VisionInputs", "VisionOutput", "encode_vision", "vision_forward", "load_image", "preprocess_image",
           "preprocess_video", "sample_frame_indices", "seconds_per_grid", "smart_resize"]
