"""Evidence that the attribution maps mean something, measured on the planted tiny model.

Run ``python -m meddx attribution-check`` (`run_check`) to build a tiny model, teach it that a bright blob
is a lung nodule (`meddx.dev.tiny.train_planted_signal`), and print three numbers per method on held-out
films:

0. **The model's evidence is the blob**: the nodule probability of each held-out film against that of the
   same film drawn without its blob (`blob_free_twins`). The explainers are judged on this model only
   because removing the blob, and nothing else, takes its nodule score away.
1. **Pointing game**: how often the map's maximum falls inside the planted blob's box.
2. **Model randomisation** (Adebayo et al., 2018, "Sanity checks for saliency maps"): the Spearman rank
   correlation between the trained model's map and the map of a copy whose image tower has random
   weights. A method whose map barely changes explains the image, not the model: low is good.
3. **Deletion and insertion** (Petsiuk et al., 2018, "RISE"), defined so that they test the explainer and
   not the eraser: the model's patches are ranked by the map (most-attributed first). *Deletion* replaces
   them one by one by the same patch of a **blurred copy of the film** (`blurred`: a Gaussian of sigma
   `BLUR_SIGMA_PATCHES` = 2 patch sides, 32 model-input pixels for 16-px patches, reflected at the border;
   on the planted model the blurred films score 0.50 against 0.86 for the films, at 1 patch side still 0.75),
   and records the finding's probability after each step; *insertion* starts from the blurred film and
   puts the original patches back in the same order. The area under each curve is compared with the same
   curves in random patch order (`RANDOM_ORDERS` orders per film): a faithful map has a **lower deletion
   and a higher insertion** area than random order. The black-patch variant (patches replaced by black;
   insertion onto a black film) is reported beside it: black squares are far from any film the model has
   seen, so they test the eraser as much as the map (issue 3: occluding body patches in black lowered the
   score more than occluding the blob).

The tests in ``tests/test_attribution.py`` call the same functions.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from meddx.dev.tiny import PLANTED_FINDING, SyntheticFilm, synthetic_film
from meddx.explain.maps import METHODS, ImageScorer, black_baseline, film_maps
from meddx.model.encoder import Encoder
from meddx.model.geometry import Geometry
from meddx.model.scored import ScoredImage, score_image
from meddx.model.vocabulary import load_vocabulary
from meddx.model.zero_shot import TextDirections, text_directions, zero_shot_logits

log = logging.getLogger(__name__)

EVAL_SEED = 20240611  # held out: training draws its films from seed 0
CHECK_OPTIONS: dict[str, dict] = {"integrated_gradients": {"n_steps": 16}}  # fewer steps than the default 50
POINTING_TOLERANCE = 15.0  # pixels, as in Zhang et al. (2018)
BLUR_SIGMA_PATCHES = 2.0  # the blurred film's Gaussian sigma, in patch sides (32 px for 16-px patches)
RANDOM_ORDERS = 3
CURVE_STEPS = 20  # deletion and insertion curves are sampled at 21 evenly spaced patch counts


def held_out_films(count: int, *, size: int = 192, seed: int = EVAL_SEED) -> list[SyntheticFilm]:
    """Synthetic films with a planted blob, drawn from a seed training never uses."""
    rng = np.random.default_rng(seed)
    return [synthetic_film(rng, size=size, blob=True) for _ in range(count)]


def blob_free_twins(count: int, *, size: int = 192, seed: int = EVAL_SEED) -> list[SyntheticFilm]:
    """The films of `held_out_films` drawn again without their blob: the same film, nothing else changed."""
    rng = np.random.default_rng(seed)
    twins = []
    for _ in range(count):
        before = copy.deepcopy(rng.bit_generator.state)
        synthetic_film(rng, size=size, blob=True)
        after = copy.deepcopy(rng.bit_generator.state)
        rng.bit_generator.state = before
        twins.append(synthetic_film(rng, size=size, blob=False))  # the blob is drawn last: same background
        rng.bit_generator.state = after
    return twins


def nodule_directions(encoder: Encoder) -> TextDirections:
    """The planted finding's text directions (memory only: a throwaway model's are never cached on disk)."""
    return text_directions(encoder, [load_vocabulary().finding(PLANTED_FINDING)])


def score_film(encoder: Encoder, film: SyntheticFilm, directions: TextDirections) -> ScoredImage:
    """The pipeline's scoring pass (`meddx.model.scored.score_image`), on a bare film."""
    return score_image(encoder, Image.fromarray(film.pixels).convert("RGB"), directions)


def film_map(encoder: Encoder, scored: ScoredImage, method: str, **options) -> np.ndarray:
    """The nodule map of one scored film."""
    [nodule] = film_maps(encoder, scored, [0], method=method, **options)
    return nodule.on_film()


def nodule_probability(encoder: Encoder, films: Sequence[SyntheticFilm]) -> np.ndarray:
    """The planted finding's zero-shot probability for each film."""
    directions = nodule_directions(encoder)
    scorer = ImageScorer(encoder.visual, directions.difference, directions.logit_scale)
    pixels = torch.stack([encoder.preprocess(Image.fromarray(f.pixels).convert("RGB"))[0] for f in films])
    with torch.inference_mode():
        return torch.sigmoid(scorer(pixels)[:, 0]).numpy()


def pointing_hit(heatmap: np.ndarray, box: tuple[int, int, int, int], *, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies in the box, or within ``tolerance`` pixels of it.

    The box is (x0, y0, x1, y1), end-exclusive. Zhang et al. (2018) count a hit within 15 px. An all-zero
    map misses.
    """
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    x0, y0, x1, y1 = box
    dx, dy = max(x0 - x, 0, x - (x1 - 1)), max(y0 - y, 0, y - (y1 - 1))
    return bool(heatmap.max() > 0 and dx * dx + dy * dy <= tolerance * tolerance)


def randomised_copy(encoder: Encoder, *, seed: int = 0, std: float = 0.02) -> Encoder:
    """A copy of the encoder whose image tower is re-initialised as timm initialises a ViT.

    Every weight matrix, convolution and embedding is redrawn from N(0, std²); LayerNorm gains are set to 1
    and every bias to 0. The text tower is untouched.
    """
    model = copy.deepcopy(encoder.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.visual.modules():
            for name, parameter in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm) and name == "weight":
                    parameter.fill_(1.0)
                elif parameter.ndim > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
                else:
                    parameter.zero_()
    return encoder.with_model(model)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between two maps (0 when either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def patch_order(heatmap: np.ndarray, geometry: Geometry, grid: int, rng: np.random.Generator) -> np.ndarray:
    """Patch indices (row-major on the model's grid), most-attributed first; ties in random order."""
    canvas = np.zeros((geometry.side, geometry.side), np.float32)
    canvas[
        geometry.pad_top : geometry.pad_top + geometry.height,
        geometry.pad_left : geometry.pad_left + geometry.width,
    ] = heatmap
    per_patch = cv2.resize(canvas, (grid, grid), interpolation=cv2.INTER_AREA).ravel()
    return np.lexsort((rng.random(per_patch.size), -per_patch))


def deletion_curve(
    scorer: torch.nn.Module,
    pixels: torch.Tensor,
    baseline: torch.Tensor,
    order: np.ndarray,
    *,
    steps: int | None = None,
) -> np.ndarray:
    """The finding's probability as the patches in ``order`` are replaced by ``baseline``'s.

    Sampled after 0, 1, ..., all patches, or at ``steps`` + 1 evenly spaced counts (one batch either way).
    """
    grid = round(len(order) ** 0.5)
    patch = pixels.shape[-1] // grid
    counts = np.arange(len(order) + 1) if steps is None else np.linspace(0, len(order), steps + 1).round()
    batch = pixels.reshape(1, *pixels.shape[-3:]).repeat(len(counts), 1, 1, 1)
    for rank, index in enumerate(order, start=1):
        row, col = divmod(int(index), grid)
        window = (slice(None), slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch))
        first = int(np.searchsorted(counts, rank))  # the samples with at least ``rank`` patches replaced
        batch[first:][(slice(None), *window)] = baseline[0][window]
    with torch.inference_mode():
        return torch.sigmoid(scorer(batch)[:, 0]).numpy()


def blurred(pixels: torch.Tensor, patch: int, *, sigma_patches: float = BLUR_SIGMA_PATCHES) -> torch.Tensor:
    """A blurred copy of a preprocessed film (1, 3, S, S): Gaussian, sigma ``sigma_patches * patch`` pixels.

    Blurring is linear, so blurring the normalised input equals normalising the blurred film.
    """
    sigma = sigma_patches * patch
    planes = pixels.reshape(-1, *pixels.shape[-2:]).detach().float().cpu().numpy()
    out = [cv2.GaussianBlur(p, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT) for p in planes]
    return torch.from_numpy(np.stack(out)).reshape(1, *pixels.shape[-3:])


def insertion_curve(
    scorer: torch.nn.Module, pixels: torch.Tensor, start: torch.Tensor, order: np.ndarray, **options
) -> np.ndarray:
    """The finding's probability as the film's patches in ``order`` are put back onto ``start``."""
    return deletion_curve(scorer, start, pixels.reshape(1, *pixels.shape[-3:]), order, **options)


def curve_area(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


@dataclass(frozen=True)
class Evidence:
    """The numbers for one method (see the module docstring); AUCs are of the probability curve.

    ``deletion_auc`` and ``insertion_auc`` replace patches by the blurred film; the ``black_`` ones by black.
    """

    method: str
    pointing: float
    pointing_15px: float
    randomisation_rho: float
    deletion_auc: float
    random_deletion_auc: float
    seconds_per_map: float
    insertion_auc: float = float("nan")
    random_insertion_auc: float = float("nan")
    black_deletion_auc: float = float("nan")
    random_black_deletion_auc: float = float("nan")
    black_insertion_auc: float = float("nan")
    random_black_insertion_auc: float = float("nan")

    def passes_deletion_and_insertion(self) -> bool:
        """Blurred replacement: deletion lower and insertion higher than in random order."""
        return self.deletion_auc < self.random_deletion_auc and self.insertion_auc > self.random_insertion_auc


CURVES = ("deletion", "insertion", "black_deletion", "black_insertion")


def curve_areas(
    scorer: torch.nn.Module, pixels: torch.Tensor, blur: torch.Tensor, black: torch.Tensor, order: np.ndarray
) -> dict[str, float]:
    """The four AUCs of one film and one patch order (`CURVES`): blurred and black, deletion and insertion."""
    steps = CURVE_STEPS
    return {
        "deletion": curve_area(deletion_curve(scorer, pixels, blur, order, steps=steps)),
        "insertion": curve_area(insertion_curve(scorer, pixels, blur, order, steps=steps)),
        "black_deletion": curve_area(deletion_curve(scorer, pixels, black, order, steps=steps)),
        "black_insertion": curve_area(insertion_curve(scorer, pixels, black, order, steps=steps)),
    }


def _mean_areas(areas: list[dict[str, float]]) -> dict[str, float]:
    return {name: _mean(a[name] for a in areas) for name in CURVES}


def evaluate(
    encoder: Encoder,
    films: Sequence[SyntheticFilm],
    methods: Sequence[str] = tuple(METHODS),
    *,
    random_orders: int = RANDOM_ORDERS,
    seed: int = 0,
) -> list[Evidence]:
    """Pointing game, randomisation correlation, deletion and insertion AUCs for each method on the films.

    The random-order AUCs are measured once (``random_orders`` orders per film) and shared by all methods.
    """
    directions = nodule_directions(encoder)
    randomised = randomised_copy(encoder, seed=seed)
    scorer = ImageScorer(encoder.visual, directions.difference, directions.logit_scale)
    black = black_baseline(encoder)
    grid = encoder.visual.trunk.patch_embed.grid_size[0]
    patch = encoder.image_size // grid
    rng = np.random.default_rng(seed)
    scored = [score_film(encoder, f, directions) for f in films]
    blurs = [blurred(s.pixels, patch) for s in scored]
    scored_random = [score_film(randomised, f, directions) for f in films]

    def areas(index: int, order: np.ndarray) -> dict[str, float]:
        return curve_areas(scorer, scored[index].pixels, blurs[index], black, order)

    chance = _mean_areas(
        [areas(i, rng.permutation(grid**2)) for i in range(len(scored)) for _ in range(random_orders)]
    )
    results = []
    for method in methods:
        options = CHECK_OPTIONS.get(method, {})
        start = time.perf_counter()
        maps = [film_map(encoder, s, method, **options) for s in scored]
        seconds = (time.perf_counter() - start) / len(scored)
        random_maps = [film_map(randomised, s, method, **options) for s in scored_random]
        boxes = [f.box for f in films]
        ranked = _mean_areas(
            [
                areas(i, patch_order(m, s.geometry, grid, rng))
                for i, (m, s) in enumerate(zip(maps, scored, strict=True))
            ]
        )
        results.append(
            Evidence(
                method=method,
                pointing=_mean(pointing_hit(m, box) for m, box in zip(maps, boxes, strict=True)),
                pointing_15px=_mean(
                    pointing_hit(m, box, tolerance=POINTING_TOLERANCE)
                    for m, box in zip(maps, boxes, strict=True)
                ),
                randomisation_rho=_mean(
                    rank_correlation(a, b) for a, b in zip(maps, random_maps, strict=True)
                ),
                deletion_auc=ranked["deletion"],
                random_deletion_auc=chance["deletion"],
                seconds_per_map=seconds,
                insertion_auc=ranked["insertion"],
                random_insertion_auc=chance["insertion"],
                black_deletion_auc=ranked["black_deletion"],
                random_black_deletion_auc=chance["black_deletion"],
                black_insertion_auc=ranked["black_insertion"],
                random_black_insertion_auc=chance["black_insertion"],
            )
        )
    return results


def _mean(values: Iterable[float]) -> float:
    return float(np.mean(list(values)))


def format_report(
    results: Sequence[Evidence], with_blob: np.ndarray, without: np.ndarray, *, images: int, size: int
) -> str:
    """The evidence as a plain-text table, after the blob-dependence line.

    Deletion and insertion AUCs, each followed by the same curve's AUC in random order ("rnd"): "blur"
    replaces patches by the blurred film (sigma `BLUR_SIGMA_PATCHES` patches), "black" by black.
    """
    columns = (
        "pointing", "+-15px", "rand.rho", "del.blur", "rnd", "ins.blur", "rnd",
        "del.black", "rnd", "ins.black", "rnd", "s/map",
    )  # fmt: skip
    lines = [
        f"{images} held-out {size}-px films with a planted blob; options {CHECK_OPTIONS}; blur sigma "
        f"{BLUR_SIGMA_PATCHES:g} patch; deletion: lower than rnd is good, insertion: higher",
        f"nodule probability with the blob {with_blob.mean():.3f}, same films without it {without.mean():.3f}"
        f" (falls by > 0.5 on {np.mean(with_blob - without > 0.5):.0%} of films)",
        f"{'method':<22}" + "".join(f"{c:>10}" for c in columns),
    ]
    for r in results:
        values = (
            r.pointing, r.pointing_15px, r.randomisation_rho,
            r.deletion_auc, r.random_deletion_auc, r.insertion_auc, r.random_insertion_auc,
            r.black_deletion_auc, r.random_black_deletion_auc, r.black_insertion_auc,
            r.random_black_insertion_auc, r.seconds_per_map,
        )  # fmt: skip
        lines.append(f"{r.method:<22}" + "".join(f"{v:>10.3f}" for v in values))
    return "\n".join(lines)


def run_check(*, images: int = 30, size: int = 192, steps: int = 120) -> str:
    """Build and train the planted tiny model in a temp folder; return the evidence table as text."""
    from meddx.dev.tiny import make_tiny_model, train_planted_signal
    from meddx.model.encoder import build_encoder
    from meddx.model.spec import ModelSpec, resolve

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "planted", seed=0)
        start = time.perf_counter()
        train_planted_signal(folder, seed=0, steps=steps)
        log.info("trained the planted tiny model (%d steps) in %.0f s", steps, time.perf_counter() - start)
        encoder = build_encoder(resolve(ModelSpec("local-dir", str(folder))))
        films = held_out_films(images, size=size)
        with_blob = nodule_probability(encoder, films)
        without = nodule_probability(encoder, blob_free_twins(images, size=size))
        results = evaluate(encoder, films)
    return format_report(results, with_blob, without, images=images, size=size)


# --- Annotated sets of synthetic films, in the layouts of public sets (for `explain-eval`) -------------


def write_dicom_film(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit MONOCHROME2 DX film with these gray levels (times 16) and no identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_annotated_set(
    folder: str | Path,
    films: Sequence[SyntheticFilm],
    box_format: str,
    *,
    stored_side: int | None = None,
    dicom: bool = False,
) -> tuple[Path, Path, Path]:
    """Write films with planted blobs and their boxes as a public set would: (images, boxes, findings map).

    The boxes are in the films' drawn frame; ``stored_side`` stores the PNGs resized to that side (as a
    downscaled export of a set), and the findings map names the drawn frame, so boxes must be scaled back.
    ``dicom`` stores DICOM files (``<name>.dcm``; RSNA's layout). Films without a blob get no box (RSNA:
    a Target 0 row).
    """
    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, tuple[int, int, int, int] | None, int]] = []
    for n, film in enumerate(films):
        name = f"film{n:03d}"
        side = film.pixels.shape[0]
        if dicom:
            write_dicom_film(images / f"{name}.dcm", film.pixels)
            file_name = f"{name}.dcm"
        else:
            pixels = film.pixels
            if stored_side:
                pixels = cv2.resize(pixels, (stored_side, stored_side), interpolation=cv2.INTER_AREA)
            file_name = f"{name}.png"
            cv2.imwrite(str(images / file_name), pixels)
        rows.append((file_name if box_format != "rsna" else name, film.box, side))
    labels = {"coco": "PulmonaryTuberculosis", "nih": "Nodule", "rsna": "Lung Opacity"}
    label = labels[box_format]
    side = films[0].pixels.shape[0]
    boxes = folder / ("boxes.json" if box_format == "coco" else "boxes.csv")
    if box_format == "coco":
        payload = {
            "images": [
                {"id": i, "file_name": n, "width": s, "height": s} for i, (n, _, s) in enumerate(rows)
            ],
            "categories": [{"id": 1, "name": label}],
            "annotations": [
                {"id": i, "image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                for i, (_, b, _) in enumerate(rows)
                if b is not None
            ],
        }
        boxes.write_text(json.dumps(payload), encoding="utf-8")
    elif box_format == "nih":
        lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
        lines += [
            f"{n},{label},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}" for n, b, _ in rows if b is not None
        ]
        boxes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        lines = ["patientId,x,y,width,height,Target"]
        lines += [
            f"{n},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]},1" if b is not None else f"{n},,,,,0"
            for n, b, _ in rows
        ]
        boxes.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = folder / "findings-map.yaml"
    mapping.write_text(f"frame: [{side}, {side}]\nlabels:\n  {label}: {PLANTED_FINDING}\n", encoding="utf-8")
    return images, boxes, mapping


# --- ViT map variants, measured against today's Grad-CAM (not offered unless they win) ------------------


class FromBlock(torch.nn.Module):
    """The image tower from the tokens entering block ``start`` to finding logits, for Captum's layer methods.

    ``grid`` (identity) sees those tokens' patches as (N, C, H, W), as `meddx.model.tower.TowerTail.grid`
    does for the last block; ``softmax`` outputs the last block's attention probabilities (N, heads, L, L),
    computed as timm's `Attention` computes them.
    """

    def __init__(self, encoder: Encoder, start: int, difference: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.trunk = encoder.visual.trunk
        self.head = encoder.visual.head
        self.start = start
        self.prefix = int(self.trunk.num_prefix_tokens)
        self.grid = torch.nn.Identity()
        self.softmax = _Softmax()  # its output, the attention probabilities, is what Captum hooks
        self.difference = difference
        self.logit_scale = logit_scale

    def tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tokens entering block ``start`` (no gradients)."""
        trunk = self.trunk
        with torch.no_grad():
            x = trunk.norm_pre(trunk.patch_drop(trunk._pos_embed(trunk.patch_embed(pixels))))
            for block in trunk.blocks[: self.start]:
                x = block(x)
        return x

    def _last_block(self, block, x: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        h = block.norm1(x)
        n, length, _ = h.shape
        qkv = attn.qkv(h).reshape(n, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        probabilities = self.softmax((q * attn.scale) @ k.transpose(-2, -1))
        y = attn.norm((probabilities @ v).transpose(1, 2).reshape(n, length, -1))
        x = x + block.ls1(attn.proj(y))
        return x + block.ls2(block.mlp(block.norm2(x)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, length, channels = tokens.shape
        side = math.isqrt(length - self.prefix)
        prefix, patches = tokens[:, : self.prefix], tokens[:, self.prefix :]
        grid = self.grid(patches.transpose(1, 2).reshape(n, channels, side, side))
        x = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
        blocks = self.trunk.blocks
        for block in blocks[self.start : -1]:
            x = block(x)
        x = self._last_block(blocks[-1], x)
        x = self.head(self.trunk.forward_head(self.trunk.norm(x)))
        return zero_shot_logits(torch.nn.functional.normalize(x, dim=-1), self.difference, self.logit_scale)


def variant_maps(encoder: Encoder, scored: ScoredImage, variant: str, *, blocks: int = 3) -> np.ndarray:
    """The nodule map (on the film) of a ViT variant: ``gradcam_blocks`` or ``attention_gradient``.

    - ``gradcam_blocks``: Captum's `LayerGradCam` on the patch tokens entering each of the last ``blocks``
      blocks, each map divided by its maximum, averaged.
    - ``attention_gradient``: the last block's attention probabilities times their gradient (Captum's
      `LayerGradientXActivation` on the probabilities), positive part, averaged over heads and over the
      query rows that are pooled (the class token's row on a class-token tower, every patch row on an
      average-pooling one); the columns of the patch keys make the map.
    """
    from captum.attr import LayerGradCam, LayerGradientXActivation

    from meddx.explain.maps import normalise
    from meddx.explain.overlay import FilmMap

    directions = nodule_directions(encoder)
    pixels = scored.pixels.detach().clone()[None]
    trunk = encoder.visual.trunk
    depth = len(trunk.blocks)
    with torch.inference_mode(False), torch.enable_grad():
        if variant == "gradcam_blocks":
            maps = []
            for start in range(max(0, depth - blocks), depth):
                model = FromBlock(encoder, start, directions.difference.clone(), directions.logit_scale)
                cam = LayerGradCam(model, model.grid).attribute(
                    model.tokens(pixels), target=0, relu_attributions=True
                )[0, 0]
                maps.append(cam / cam.max() if cam.max() > 0 else cam)
            square = torch.stack(maps).mean(0)
        elif variant == "attention_gradient":
            model = FromBlock(encoder, depth - 1, directions.difference.clone(), directions.logit_scale)
            probe = LayerGradientXActivation(model, model.softmax)
            product = probe.attribute(model.tokens(pixels), target=0)[0].clamp(min=0)  # (heads, L, L)
            prefix = int(trunk.num_prefix_tokens)
            rows = product[:, :1] if trunk.global_pool == "token" else product[:, prefix:]
            weights = rows.mean(dim=(0, 1))[prefix:]
            side = math.isqrt(weights.numel())
            square = weights.reshape(side, side)
        else:
            raise ValueError(f"unknown variant {variant!r}")
    [positive] = normalise(square.detach()[None])
    return FilmMap(positive, scored.geometry).on_film()


class _Softmax(torch.nn.Module):
    """The attention's softmax as a module, so that its output (the probabilities) can be hooked."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.softmax(dim=-1)
