"""Reading images: unusual modes become the right 8-bit RGB, broken files are named (or skipped on request), and
ordinary images embed exactly as before."""

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata
from tti_eval.compute import compute_embeddings
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.images import DRAFT_OVERSAMPLING, BadImageError, decode_image, jpeg_draft_scale, to_rgb
from tti_eval.dataset.types.hugging_face import HFDataset
from tti_eval.dataset.types.image_folder import ImageFolderDataset
from tti_eval.model import ModelProvider

runner = CliRunner()


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).reshape(-1, 3)


def _grey(*levels: int) -> np.ndarray:
    return np.repeat(np.array(levels, dtype=np.uint8)[:, None], 3, axis=1)


def _reopened(image: Image.Image, tmp_path: Path, suffix: str) -> Image.Image:
    """`image` saved to a real file and decoded the way datasets decode files."""
    path = tmp_path / f"image{suffix}"
    image.save(path)
    return decode_image(path, str(path), "modes")


# -- modes: each against levels computed by hand ---------------------------------------------------------------------


def test_sixteen_bit_greys_are_scaled_not_clipped(tmp_path):
    # 257 is one 8-bit step in 16 bits: v / 257 exactly, 32896 = 128 * 257, 1000 / 257 = 3.9 -> 4.
    image = Image.fromarray(np.array([[0, 257, 32896, 65535, 1000]], dtype=np.uint16))
    assert image.mode == "I;16"
    expected = _grey(0, 1, 128, 255, 4)
    np.testing.assert_array_equal(_pixels(to_rgb(image)), expected)
    np.testing.assert_array_equal(_pixels(_reopened(image, tmp_path, ".png")), expected)  # a 16-bit PNG
    big_endian = Image.frombytes("I;16B", (5, 1), np.array([0, 257, 32896, 65535, 1000], dtype=">u2").tobytes())
    np.testing.assert_array_equal(_pixels(to_rgb(big_endian)), expected)


def test_thirty_two_bit_integers_read_as_sixteen_bit_or_stretched():
    within = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32))
    assert within.mode == "I"
    np.testing.assert_array_equal(_pixels(to_rgb(within)), _grey(0, 4, 255))
    # Outside 0..65535 the image's own range is stretched: (v + 100) * 255 / 510.
    beyond = Image.fromarray(np.array([[-100, 0, 410]], dtype=np.int32))
    np.testing.assert_array_equal(_pixels(to_rgb(beyond)), _grey(0, 50, 255))


def test_floats_read_as_intensities_or_stretched():
    unit = Image.fromarray(np.array([[0.0, 0.25, 1.0, np.nan]], dtype=np.float32))
    assert unit.mode == "F"
    np.testing.assert_array_equal(_pixels(to_rgb(unit)), _grey(0, 64, 255, 0))  # 0.25 * 255 = 63.75
    wide = Image.fromarray(np.array([[-1.0, 0.0, 3.0]], dtype=np.float32))
    np.testing.assert_array_equal(_pixels(to_rgb(wide)), _grey(0, 64, 255))  # (v + 1) * 255 / 4


def _over_white(colour: tuple[int, ...], alpha: int) -> list[int]:
    return [round(c * alpha / 255 + 255 * (1 - alpha / 255)) for c in colour]


@pytest.mark.parametrize(
    ("mode", "value", "colour", "alpha"),
    [
        ("RGBA", (200, 0, 100, 64), (200, 0, 100), 64),
        ("RGBA", (200, 0, 100, 255), (200, 0, 100), 255),
        ("RGBA", (200, 0, 100, 0), (200, 0, 100), 0),
        ("LA", (100, 128), (100, 100, 100), 128),
    ],
)
def test_transparency_is_composited_on_white(tmp_path, mode, value, colour, alpha):
    image = Image.new(mode, (2, 1), value)
    expected = np.array([_over_white(colour, alpha)] * 2)
    np.testing.assert_allclose(_pixels(to_rgb(image)), expected, atol=1)
    np.testing.assert_allclose(_pixels(_reopened(image, tmp_path, ".png")), expected, atol=1)


def test_palette_and_grey_transparency_become_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])  # 0: red, 1: blue
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 1  # blue is the transparent colour
    expected = np.array([[255, 0, 0], [255, 255, 255]])
    np.testing.assert_array_equal(_pixels(to_rgb(palette)), expected)
    np.testing.assert_array_equal(_pixels(_reopened(palette, tmp_path, ".png")), expected)
    np.testing.assert_array_equal(_pixels(_reopened(palette, tmp_path, ".gif")), expected)

    grey = Image.fromarray(np.array([[7, 90]], dtype=np.uint8))
    grey.info["transparency"] = 7  # a grey PNG's tRNS colour
    np.testing.assert_array_equal(_pixels(_reopened(grey, tmp_path, ".png")), _grey(255, 90))


def test_cmyk_bilevel_and_plain_modes(tmp_path):
    # CMYK to RGB: 255 * (1 - C/255) * (1 - K/255); (100, 50, 0, 60) -> (119, 157, 195).
    cmyk = Image.new("CMYK", (1, 1), (100, 50, 0, 60))
    expected = [[round(255 * (1 - c / 255) * (1 - 60 / 255)) for c in (100, 50, 0)]]
    np.testing.assert_array_equal(_pixels(_reopened(cmyk, tmp_path, ".tif")), expected)
    bilevel = Image.fromarray(np.array([[False, True]]))
    np.testing.assert_array_equal(_pixels(to_rgb(bilevel)), _grey(0, 255))
    np.testing.assert_array_equal(_pixels(to_rgb(Image.new("L", (1, 1), 77))), _grey(77))
    rgb = Image.new("RGB", (1, 1), (1, 2, 3))
    assert to_rgb(rgb) is rgb


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6  # stored rotated: display turns it 90° clockwise
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    upright = decode_image(path, str(path), "modes")
    assert upright.size == (2, 4) and upright.getpixel((1, 0)) == (255, 255, 255)


# -- broken files ----------------------------------------------------------------------------------------------------


def _png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _decompression_bomb() -> bytes:
    """A valid 1×1 PNG whose header claims 20000×20000 pixels (with a correct CRC), as a bomb would."""
    data = bytearray(_png_bytes((1, 1)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


BAD_FILES = {
    "truncated.png": lambda: _png_bytes((64, 64))[:60],
    "truncated.jpg": lambda: _jpeg_bytes((64, 64))[:400],
    "text.jpg": lambda: b"this is not an image\n",
    "bomb.png": _decompression_bomb,
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_broken_file_is_named_with_its_dataset(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name]())
    with pytest.raises(BadImageError) as caught:
        decode_image(path, str(path), "holiday-photos")
    message = str(caught.value)
    assert str(path) in message and "'holiday-photos'" in message and "--skip-bad-images" in message
    assert caught.value.item == str(path)


@pytest.fixture
def tree_with_bad_files(digits_tree, tmp_path) -> tuple[Path, list[Path]]:
    """The digits tree's validation split and a copy of its train split in which four files are broken."""
    root = tmp_path / "tree"
    shutil.copytree(digits_tree.root / "train", root / "train")
    shutil.copytree(digits_tree.root / "validation", root / "validation")
    class_folders = sorted((root / "validation").iterdir())
    bad = []
    for folder, (name, content) in zip(class_folders, sorted(BAD_FILES.items()), strict=False):
        bad.append(folder / name)
        bad[-1].write_bytes(content())
    return root, sorted(bad)


@pytest.mark.parametrize("dataset_type", [ImageFolderDataset, HFDataset])
def test_build_stops_at_a_bad_file_or_skips_them_on_request(tiny_models, cache_path, tree_with_bad_files, dataset_type):
    root, bad = tree_with_bad_files
    title = f"broken-{dataset_type.__name__.lower()}"
    DatasetProvider.register_dataset(dataset_type, title, title_in_source=str(root))
    pair = EmbeddingDefinition(model="tiny-openclip", dataset=title)

    result = runner.invoke(app, ["build", "-md", str(pair), "--split", "validation", "--num-workers", "0"])
    output = " ".join(result.output.split())  # undo rich's line wrapping
    assert result.exit_code == 1
    # The first broken file in dataset order is named, with the dataset and what to do.
    assert f"Image {bad[0]} of dataset '{title}' cannot be read" in output and "--skip-bad-images" in output
    assert "Traceback" not in output
    assert not embedding_path(pair, Split.VALIDATION).exists()

    args = ["build", "-md", str(pair), "--split", "validation", "--skip-bad-images", "--num-workers", "1"]
    result = runner.invoke(app, args)
    output = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"Skipped {len(bad)} unreadable images" in output
    assert all(str(path) in output for path in bad)
    metadata = load_metadata(pair, Split.VALIDATION)
    assert sorted(entry["image"] for entry in metadata["skipped_images"]) == [str(path) for path in bad]
    assert all(entry["reason"] for entry in metadata["skipped_images"])

    # The kept images embed exactly as a dataset without the broken files would.
    embeddings = load_embeddings(pair, Split.VALIDATION)
    for path in bad:
        path.unlink()
    clean = DatasetProvider.get_dataset(title, Split.VALIDATION)  # lists the folder again
    reference = compute_embeddings(ModelProvider.get_model("tiny-openclip"), clean, num_workers=0)
    assert metadata["num_images"] == len(clean) == len(embeddings.labels)
    np.testing.assert_array_equal(embeddings.labels, reference.labels)
    np.testing.assert_allclose(embeddings.images, reference.images, atol=1e-6)


def test_a_split_with_no_readable_image_is_refused(tiny_models, cache_path, tmp_path):
    for split in ("train", "validation"):
        (tmp_path / split / "cat").mkdir(parents=True)
        (tmp_path / split / "cat" / "a.jpg").write_bytes(b"not an image")
    DatasetProvider.register_dataset(ImageFolderDataset, "all-broken", title_in_source=str(tmp_path))
    pair = EmbeddingDefinition(model="tiny-openclip", dataset="all-broken")
    args = ["build", "-md", str(pair), "--split", "validation", "--skip-bad-images", "--num-workers", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "No image of the validation split of dataset 'all-broken' could be read" in " ".join(result.output.split())
    assert not embedding_path(pair, Split.VALIDATION).exists()


# -- ordinary images embed as before ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset_type", ["ImageFolderDataset", "HFDataset"])
@pytest.mark.parametrize("model_title", ["tiny-openclip", "tiny-hf-clip"])
def test_digits_embed_as_pillow_and_the_models_own_transform_do(tiny_models, digits_tree, dataset_type, model_title):
    """The reference is what the engine did before images.py existed: Pillow's convert("RGB") on each file, then the
    model's own per-image transform (OpenCLIP) or image processor (transformers), one image at a time."""
    model = ModelProvider.get_model(model_title)
    dataset = DatasetProvider.get_dataset(digits_tree.titles[dataset_type], Split.VALIDATION)
    embeddings = compute_embeddings(model, dataset, batch_size=16, num_workers=0)
    files = sorted(digits_tree.root.glob("validation/*/*.png"))
    assert len(files) == len(embeddings.labels)
    for i, path in enumerate(files):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if model_title == "tiny-openclip":
            pixels = model.transform(rgb)[None]
        else:
            pixels = torch.as_tensor(np.asarray(model.image_processor(images=[rgb])["pixel_values"]))
        np.testing.assert_allclose(embeddings.images[i], model.embed_images(pixels)[0], atol=1e-6)


# -- decoding for speed ----------------------------------------------------------------------------------------------


def test_openclip_batches_travel_as_8_bit_pixels_and_become_the_same_values(tiny_models):
    model = ModelProvider.get_model("tiny-openclip")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 60), (90, 33)]]
    preprocess = model.get_image_preprocessor()
    packed = preprocess(images)
    reference = torch.stack([model.transform(image) for image in images])
    assert packed.dtype == torch.uint8 and packed.shape == reference.shape
    np.testing.assert_array_equal(preprocess.model_input(packed).numpy(), reference.numpy())
    np.testing.assert_array_equal(model.embed_images(packed), model.embed_images(reference))


@pytest.mark.parametrize("lookup", [True, False], ids=["table", "arithmetic"])
def test_openclip_model_input_is_exact_for_every_level(tiny_models, lookup):
    """Images already at the model's input size, holding each of the 256 levels in every channel: both ways of
    converting 8-bit pixels (the CPU's table, other devices' arithmetic) must equal ToTensor + Normalize."""
    model = ModelProvider.get_model("tiny-openclip")
    rng = np.random.default_rng(1)
    levels = np.arange(32 * 32) % 256
    images = [
        Image.fromarray(
            np.stack([rng.permutation(levels) for _ in range(3)], axis=-1).reshape(32, 32, 3).astype(np.uint8)
        )
        for _ in range(2)
    ]
    preprocess = model.get_image_preprocessor()
    converted = preprocess.model_input(preprocess(images), lookup=lookup)
    assert converted.dtype == torch.float32
    np.testing.assert_array_equal(converted.numpy(), torch.stack([model.transform(image) for image in images]).numpy())


@pytest.mark.parametrize("model_title", ["tiny-openclip", "tiny-hf-clip", "tiny-siglip"])
def test_models_know_their_input_size(tiny_models, model_title):
    assert ModelProvider.get_model(model_title).image_input_size() == 32  # TINY_IMAGE_SIZE of every tiny model


def _jpeg_of(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _smooth_photo(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Smooth colours, so that any good reduction of it is well defined whatever its sampling grid."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("size", [(500, 375), (1600, 1200), (375, 500), (900, 600), (4000, 3000), (97, 61), (4000, 30)])
@pytest.mark.parametrize("min_size", [16, 32, 100, 224])
def test_draft_jpeg_scale_is_the_one_pillows_draft_mode_picks(size, min_size):
    """Pillow's draft mode reduces by 1/2, 1/4 or 1/8 as far as both sides stay at least the size asked: an
    independent reference for the scale at which draft decoding asks libjpeg-turbo to decode."""
    with Image.open(io.BytesIO(_jpeg_bytes(size))) as image:
        image.draft("RGB", (DRAFT_OVERSAMPLING * min_size,) * 2)
        pillows = image.size
    scale = jpeg_draft_scale(size, min_size)
    assert tuple(-(-side // scale) for side in size) == pillows


@pytest.mark.parametrize("size", [(500, 375), (1600, 1200), (375, 500), (333, 250), (224, 224), (97, 61), (4000, 30)])
@pytest.mark.parametrize("min_size", [16, 32, 224, 240])
def test_a_draft_has_the_size_the_models_resize_would_give(size, min_size):
    """The shorter side comes down to `min_size` exactly as torchvision's Resize(min_size) sizes it, so a model's
    own resize has nothing left to do; smaller images keep their size."""
    data = _jpeg_bytes(size)
    draft, full = decode_image(data, "photo", "d", min_size=min_size), decode_image(data, "photo", "d")
    assert draft.mode == "RGB" and full.size == size  # without the option nothing changes
    if min(size) > min_size:
        assert draft.size == T.Resize(min_size)(full).size
        assert T.Resize(min_size)(draft).size == draft.size
    else:
        assert draft.size == size


def test_draft_pixels_stay_close_to_the_models_own_preprocessing():
    """Against full decoding + Pillow's bicubic (what open_clip's Resize does): without a reduced-scale decode only
    the resampler differs (torch's antialiased bicubic: hundredths of a level); with one, a fraction of a level."""
    for size, min_size, mean_levels, max_levels in (((500, 375), 224, 0.02, 2), ((1600, 1200), 224, 0.5, 8)):
        data = _jpeg_of(_smooth_photo(size), quality=95)
        draft = np.asarray(decode_image(data, "photo", "d", min_size=min_size), dtype=np.float64)
        full = decode_image(data, "photo", "d")
        reference = np.asarray(full.resize(draft.shape[1::-1], Image.Resampling.BICUBIC), dtype=np.float64)
        difference = np.abs(draft - reference)  # swapped channels or a misplaced grid: tens of levels
        assert difference.mean() < mean_levels and difference.max() <= max_levels


def test_draft_decoding_keeps_orientation_and_grey_as_full_decoding_does():
    photo = _smooth_photo((500, 375))
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6  # rotated 90° clockwise
    rotated = _jpeg_of(photo, exif=exif)
    upright = decode_image(rotated, "photo", "d")
    draft = decode_image(rotated, "photo", "d", min_size=224)
    assert upright.size == (375, 500) and draft.size == (224, 298)
    reference = np.asarray(upright.resize(draft.size, Image.Resampling.BICUBIC), dtype=np.float64)
    assert np.abs(np.asarray(draft, dtype=np.float64) - reference).mean() < 0.5  # turned the same way

    for progressive in (False, True):  # a greyscale JPEG becomes RGB with equal channels, progressive or not
        grey = decode_image(_jpeg_of(photo.convert("L"), progressive=progressive), "grey", "d", min_size=100)
        assert grey.mode == "RGB" and grey.size == (133, 100)
        channels = np.asarray(grey)
        assert (channels[..., 0] == channels[..., 1]).all() and (channels[..., 1] == channels[..., 2]).all()


def test_draft_decoding_falls_back_to_pillow_for_what_libjpeg_turbo_does_not_take(tmp_path):
    photo = _smooth_photo((1600, 1200))
    # CMYK JPEGs go through Pillow's draft mode and colour conversion; the draft is then reduced like any other.
    cmyk = _jpeg_of(photo.convert("CMYK"), quality=95)
    draft = decode_image(cmyk, "cmyk", "d", min_size=100)
    assert draft.mode == "RGB" and draft.size == (133, 100)
    reference = decode_image(cmyk, "cmyk", "d").resize(draft.size, Image.Resampling.BICUBIC)
    assert np.abs(np.asarray(draft, dtype=np.float64) - np.asarray(reference, dtype=np.float64)).mean() < 1
    png = tmp_path / "photo.png"
    photo.save(png)
    assert decode_image(png, "photo", "d", min_size=300).size == (400, 300)  # reduced, though decoded in full
    # A truncated JPEG that libjpeg-turbo rejects is still named as a bad image, with Pillow's reason.
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(_jpeg_bytes((640, 480))[:2000], "broken", "d", min_size=100)


@pytest.mark.parametrize("model_title", ["tiny-openclip", "tiny-hf-clip", "tiny-siglip"])
def test_every_model_type_embeds_drafts_as_its_own_preprocessor_does(tiny_models, tmp_path, model_title):
    """Draft images reach each model type's own preprocessor (open_clip's transform, transformers' processors) as
    images of its input side; the embeddings are those of each draft image preprocessed alone."""
    for split in ("train", "validation"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(3):
            photo = _smooth_photo((160 + 8 * i, 120), seed=i)
            (tmp_path / split / "a" / f"{i}.jpg").write_bytes(_jpeg_of(photo))
    DatasetProvider.register_dataset(ImageFolderDataset, f"drafts-{model_title}", title_in_source=str(tmp_path))
    dataset = DatasetProvider.get_dataset(f"drafts-{model_title}", Split.VALIDATION)
    model = ModelProvider.get_model(model_title)
    embeddings = compute_embeddings(model, dataset, batch_size=2, num_workers=0, draft_decode=True)
    preprocess = model.get_image_preprocessor()
    for i, path in enumerate(sorted(tmp_path.glob("validation/a/*.jpg"))):
        image = decode_image(path, str(path), "drafts", min_size=32)
        assert min(image.size) == 32
        np.testing.assert_allclose(embeddings.images[i], model.embed_images(preprocess([image]))[0], atol=1e-6)


def test_build_with_draft_decoding_opts_in_and_says_so(tiny_models, cache_path, tmp_path):
    for split, count in (("train", 2), ("validation", 3)):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                (tmp_path / split / label / f"{i}.jpg").write_bytes(_jpeg_bytes((512 + 8 * i, 384)))
    DatasetProvider.register_dataset(ImageFolderDataset, "jpegs", title_in_source=str(tmp_path))
    pair = EmbeddingDefinition(model="tiny-openclip", dataset="jpegs")
    model = ModelProvider.get_model("tiny-openclip")

    for draft in (False, True):
        # No --overwrite: the option is part of the split's fingerprint, so switching it marks the split stale.
        args = ["build", "-md", str(pair), "--split", "validation", "--num-workers", "1"]
        result = runner.invoke(app, args + (["--draft-decode"] if draft else []))
        assert result.exit_code == 0, result.output
        assert ("stale (draft decoding switched on)" in result.output) is draft
        assert load_metadata(pair, Split.VALIDATION)["draft_decode"] is draft
        embeddings = load_embeddings(pair, Split.VALIDATION)
        # Reference: each file decoded on its own, at 1/4 scale with the draft (twice the 32-pixel input is 64, and
        # 1/8 of 384 would be 48) and reduced to 32 pixels high, then the model's own transform.
        for i, path in enumerate(sorted(tmp_path.glob("validation/*/*.jpg"))):
            image = decode_image(path, str(path), "jpegs", min_size=32 if draft else None)
            assert image.size == (32 * (512 + 8 * (i % 3)) // 384, 32) if draft else image.size[1] == 384
            reference = model.embed_images(model.transform(image)[None])[0]
            np.testing.assert_allclose(embeddings.images[i], reference, atol=1e-6)
        if not draft:
            full = embeddings.images
    assert not np.allclose(full, embeddings.images, atol=1e-3)  # the option does change pixels
    assert DatasetProvider.get_dataset("jpegs", Split.VALIDATION).min_image_size is None
