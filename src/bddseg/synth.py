"""The built-in synthetic dataset: procedural driving scenes in the official BDD100K layout.

Every scene is seen through one pinhole camera over a flat ground plane, so sizes and places
agree with perspective: a point ``(x right, y up, z forward)`` in metres lands at pixel
``u = cx + f*x/z``, ``v = cy + f*(cam_h - y)/z`` (``cy`` is the horizon row). Objects are
drawn back to front into the RGB image and its mask at once (PIL polygons), then a few
vectorised numpy passes add per-class texture, lighting and sensor grain.

Each class keeps a colour *family* and a consistent shape and place (cars have dark windows
and wheels and stand in lanes; trees are blobs on trunks beside the road), so a small model
learns them in minutes; lighting, colours, sizes and occlusion vary enough that it must use
shape and context. Each image's random generator derives from ``(seed, split, index)``, so
the output is byte-identical for any number of worker processes.
"""

from __future__ import annotations

import concurrent.futures
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bddseg.colors import PALETTE_LUT
from bddseg.errors import BddsegError
from bddseg.files import atomic_path
from bddseg.labels import IGNORE_VALUE

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE = range(11, 19)
VOID = IGNORE_VALUE  # ego vehicle, overpass, rail bed: unlabelled in BDD100K
SPLITS = ("train", "val", "test")
_PALETTE = PALETTE_LUT.ravel().tolist()  # flat, for PIL's putpalette
Z_FAR = 500.0  # ground polygons end here; beyond it everything is under a pixel

# Colour families, before lighting. Each object picks one and varies it.
ROAD_C = [(70, 70, 74), (86, 85, 86), (58, 58, 63), (96, 94, 92)]
WALK_C = [(165, 156, 145), (180, 168, 152), (150, 146, 142), (168, 128, 116)]
BUILD_C = [(150, 145, 140), (190, 170, 140), (160, 92, 72), (205, 190, 160), (120, 95, 80)]
WALL_C = [(165, 158, 146), (128, 124, 118), (172, 122, 98)]
FENCE_C = [(80, 80, 84), (150, 110, 75), (200, 200, 195)]
VEG_C = [(45, 85, 35), (65, 100, 40), (35, 70, 30), (80, 105, 45)]
TERRAIN_C = [(150, 170, 90), (170, 165, 100), (160, 140, 100), (140, 160, 85)]
CAR_C = [(205, 205, 210), (28, 28, 32), (120, 120, 126), (160, 22, 28), (22, 42, 112)]
CAR_C += [(232, 232, 232), (88, 88, 98), (60, 82, 62), (172, 172, 178), (190, 150, 60)]
BUS_C = [(230, 170, 20), (225, 225, 225), (180, 40, 35), (40, 90, 160)]
TRAIN_C = [(210, 212, 215), (170, 40, 40), (50, 80, 140)]
CLOTH_C = [(30, 30, 35), (60, 60, 70), (150, 30, 30), (30, 60, 130), (200, 200, 200), (90, 70, 50)]
SKIN_C = [(225, 185, 160), (190, 140, 105), (120, 80, 60)]
SKY_C = {  # (zenith, horizon)
    "day": ((50, 105, 190), (150, 190, 235)),
    "overcast": ((185, 190, 200), (225, 228, 232)),
    "dusk": ((60, 60, 120), (240, 150, 100)),
    "night": ((12, 18, 45), (45, 50, 80)),
}
GAIN = {"day": (0.95, 1.15), "overcast": (0.85, 1.0), "dusk": (0.65, 0.85), "night": (0.35, 0.5)}
TINT = {"dusk": (1.1, 0.95, 0.85), "night": (0.9, 0.95, 1.12)}

# Texture strength per class: coarse blotches and leaf-scale speckle (fractions of brightness)
# and per-pixel grain (grey levels). Vegetation and terrain are the rough ones.
_COARSE, _LEAF, _GRAIN = (np.full(256, v, np.float32) for v in (0.05, 0.03, 3.0))
for _c, _t in {
    ROAD: (0.06, 0.04, 5),
    SIDEWALK: (0.05, 0.04, 5),
    BUILDING: (0.06, 0.03, 4),
    WALL: (0.12, 0.06, 5),
    VEG: (0.22, 0.30, 10),
    TERRAIN: (0.18, 0.14, 9),
    SKY: (0.02, 0.0, 1.5),
}.items():
    _COARSE[_c], _LEAF[_c], _GRAIN[_c] = _t

# fmt: off
# Small figures as parts in metres around their ground point (a right, b up), drawn in order:
# (shape, colour key, class, points, width or radius). Wheels are "disk" or "ring".
PERSON_PARTS = [
    ("poly", "pants", PERSON, [(-0.17, 0.9), (-0.01, 0.9), (-0.03, 0), (-0.15, 0)], 0),
    ("poly", "pants", PERSON, [(0.17, 0.9), (0.01, 0.9), (0.03, 0), (0.15, 0)], 0),
    ("poly", "shirt", PERSON, [(-0.3, 1.42), (-0.2, 1.46), (-0.2, 0.82), (-0.28, 0.82)], 0),
    ("poly", "shirt", PERSON, [(0.3, 1.42), (0.2, 1.46), (0.2, 0.82), (0.28, 0.82)], 0),
    ("poly", "shirt", PERSON, [(-0.22, 1.48), (0.22, 1.48), (0.18, 0.86), (-0.18, 0.86)], 0),
    ("disk", "skin", PERSON, [(0, 1.62)], 0.11),
    ("disk", "hair", PERSON, [(0, 1.68)], 0.08),
]
BIKE_SIDE = [
    ("ring", "dark", BIKE, [(-0.52, 0.33)], 0.33),
    ("ring", "dark", BIKE, [(0.52, 0.33)], 0.33),
    ("line", "paint", BIKE, [(-0.52, 0.33), (0, 0.3), (0.42, 0.92), (-0.15, 0.92), (-0.52, 0.33)], 0.05),
    ("line", "paint", BIKE, [(0, 0.3), (-0.18, 1.0)], 0.05),
    ("line", "metal", BIKE, [(0.52, 0.33), (0.42, 1.08)], 0.05),
]
MOTO_SIDE = [
    ("disk", "dark", MOTO, [(-0.7, 0.32)], 0.32),
    ("disk", "dark", MOTO, [(0.7, 0.32)], 0.32),
    ("poly", "paint", MOTO, [(-0.8, 0.6), (-0.2, 0.66), (0.1, 0.92), (0.5, 0.96), (0.62, 0.6),
                             (0.2, 0.4), (-0.3, 0.42)], 0),
    ("poly", "dark", MOTO, [(-0.7, 0.78), (-0.05, 0.86), (-0.05, 0.72), (-0.7, 0.66)], 0),
    ("line", "metal", MOTO, [(0.7, 0.32), (0.5, 1.08)], 0.05),
]
BIKE_BACK = [
    ("poly", "dark", BIKE, [(-0.03, 0), (0.03, 0), (0.03, 0.66), (-0.03, 0.66)], 0),
    ("line", "metal", BIKE, [(-0.3, 1.05), (0.3, 1.05)], 0.04),
]
MOTO_BACK = [
    ("poly", "dark", MOTO, [(-0.09, 0), (0.09, 0), (0.09, 0.66), (-0.09, 0.66)], 0),
    ("poly", "paint", MOTO, [(-0.3, 0.42), (0.3, 0.42), (0.26, 0.95), (-0.26, 0.95)], 0),
    ("poly", "red", MOTO, [(-0.1, 0.72), (0.1, 0.72), (0.1, 0.82), (-0.1, 0.82)], 0),
    ("line", "metal", MOTO, [(-0.35, 1.05), (0.35, 1.05)], 0.04),
]
RIDER_BACK = [
    ("line", "pants", RIDER, [(-0.14, 0.9), (-0.28, 0.5), (-0.16, 0.3)], 0.12),
    ("line", "pants", RIDER, [(0.14, 0.9), (0.28, 0.5), (0.16, 0.3)], 0.12),
    ("line", "shirt", RIDER, [(-0.2, 1.4), (-0.35, 1.05)], 0.09),
    ("line", "shirt", RIDER, [(0.2, 1.4), (0.35, 1.05)], 0.09),
    ("poly", "shirt", RIDER, [(-0.23, 1.45), (0.23, 1.45), (0.19, 0.9), (-0.19, 0.9)], 0),
    ("disk", "helmet", RIDER, [(0, 1.62)], 0.14),
]
RIDER_SIDE = [
    ("line", "pants", RIDER, [(-0.2, 0.95), (0.2, 0.7), (0.05, 0.35)], 0.13),
    ("line", "shirt", RIDER, [(-0.2, 0.95), (0.05, 1.48)], 0.3),
    ("line", "shirt", RIDER, [(0.05, 1.48), (0.45, 1.08)], 0.1),
    ("disk", "helmet", RIDER, [(0.14, 1.66)], 0.14),
]
# fmt: on


def _vary(rng: np.random.Generator, base, spread: float = 0.12, tint: float = 8) -> tuple:
    """A colour of a family: ``base`` times a random brightness, plus a small random tint."""
    k, *d = rng.standard_normal(4).tolist()  # plain floats: numpy scalars are slow here
    k = 1 + spread * max(-1.7, min(1.7, k))
    return tuple(max(0, min(255, int(c * k + tint * e))) for c, e in zip(base, d, strict=True))


def _pick(rng: np.random.Generator, family, spread: float = 0.12, tint: float = 8) -> tuple:
    return _vary(rng, family[rng.integers(len(family))], spread, tint)


def _shade(color, k: float) -> tuple:
    return tuple(min(255, int(c * k)) for c in color)


class _Canvas:
    """The image, its mask and a layer of lights, all drawn through one pinhole camera."""

    def __init__(self, rng: np.random.Generator, height: int, width: int, light: str):
        self.h, self.w, self.light = height, width, light
        self.f = width * rng.uniform(0.75, 0.95)
        self.cx = width * (0.5 + rng.normal(0, 0.04))
        self.cy = height * rng.uniform(0.4, 0.54)
        self.cam_h = rng.uniform(1.3, 1.7)
        self.img = Image.fromarray(_sky(rng, height, width, self.cy, light))
        self.mask = Image.new("L", (width, height), SKY)
        self.di, self.dm = ImageDraw.Draw(self.img), ImageDraw.Draw(self.mask)
        # Lights only matter when it is dark enough for them to stand out.
        self.lights = Image.new("RGB", (width, height)) if light in ("dusk", "night") else None
        self.dl = ImageDraw.Draw(self.lights) if self.lights else None

    def p(self, x: float, y: float, z: float) -> tuple[float, float]:
        a = self.f / max(z, 0.5)  # clamp so that near-plane corners stay finite (PIL clips)
        return (self.cx + x * a, self.cy + (self.cam_h - y) * a)

    def size(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.f / max(z, 0.5)

    def poly(self, pts, color, cls) -> None:
        self.di.polygon(pts, fill=color)
        if cls is not None:  # None paints the image only: the label underneath stays
            self.dm.polygon(pts, fill=cls)

    def project(self, pts) -> list[tuple[float, float]]:
        """``p`` over a list of points, inlined: this is the renderer's hot loop."""
        f, cx, cy, h = self.f, self.cx, self.cy, self.cam_h
        return [(cx + x * f / max(z, 0.5), cy + (h - y) * f / max(z, 0.5)) for x, y, z in pts]

    def poly3(self, pts, color, cls) -> None:
        self.poly(self.project(pts), color, cls)

    def ground(self, x0, x1, z0, z1, color, cls, y=0.0) -> None:
        self.poly3([(x0, y, z0), (x1, y, z0), (x1, y, z1), (x0, y, z1)], color, cls)

    def side(self, x, y0, y1, z0, z1, color, cls) -> None:  # in a plane along the road
        self.poly3([(x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)], color, cls)

    def front(self, x0, x1, y0, y1, z, color, cls) -> None:  # facing the camera
        self.poly3([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)], color, cls)

    def box(self, x0, x1, y0, y1, z0, z1, color, cls, top: bool = True) -> None:
        """A box from its visible faces; these never overlap, so their order is free."""
        if x0 > 0 or x1 < 0:
            self.side(x0 if x0 > 0 else x1, y0, y1, z0, z1, _shade(color, 0.78), cls)
        if top and y1 < self.cam_h:
            self.ground(x0, x1, z0, z1, _shade(color, 1.12), cls, y=y1)
        self.front(x0, x1, y0, y1, z0, color, cls)

    def ellipse(self, u, v, ru, rv, color, cls, width: int = 0) -> None:
        box = (u - ru, v - rv, u + ru, v + rv)
        self.di.ellipse(box, fill=None if width else color, outline=color, width=width)
        if cls is not None:
            self.dm.ellipse(box, fill=None if width else cls, outline=cls, width=width)

    def glow(self, x, y, z, r, color) -> None:
        if self.dl is not None:
            u, v = self.p(x, y, z)
            rp = max(1.0, r * self.size(z))
            self.dl.ellipse((u - rp, v - rp, u + rp, v + rp), fill=color)


def _smooth(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise, zero mean and about unit spread, with features ``cell`` px wide."""
    small = rng.integers(0, 256, (h // cell + 2, w // cell + 2), dtype=np.uint8)  # cheap bytes
    big = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), np.float32)
    return (big - 127.5) * (1 / 60)


def _sky(rng: np.random.Generator, h: int, w: int, cy: float, light: str) -> np.ndarray:
    """A vertical gradient with soft clouds by day. Computed at 1/4 size: it is all smooth."""
    hs, ws = h // 4 + 1, w // 4 + 1
    top, bottom = (np.asarray(c, np.float32) for c in SKY_C[light])
    t = np.clip(np.arange(hs, dtype=np.float32) * 4 / max(cy, 1.0), 0, 1)[:, None, None] ** 1.5
    sky = np.repeat((1 - t) * top + t * bottom + rng.normal(0, 6, 3).astype(np.float32), ws, 1)
    if light in ("day", "overcast"):
        cover = np.clip(_smooth(rng, hs, ws, max(2, ws // 10)) - rng.uniform(0.5, 1.6), 0, 1)
        sky += (230 - sky) * (0.8 * cover)[..., None]
    small = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.BILINEAR))


# ---------------------------------------------------------------- road layout and ground
class _Layout:
    """Where the road, its lanes and the two roadsides are (metres; x = 0 is the camera)."""

    def __init__(self, rng: np.random.Generator, kind: str):
        U, hwy = rng.uniform, kind == "highway"
        self.kind = kind
        self.lanes = int(rng.choice([2, 3, 4], p=[0.2, 0.3, 0.5] if hwy else [0.5, 0.3, 0.2]))
        self.lane_w = U(3.0, 3.7)
        self.oncoming = self.lanes // 2 if not hwy and rng.random() < 0.75 else 0  # on the left
        ego = rng.integers(self.oncoming, self.lanes)
        self.xl = -self.lane_w * (ego + 0.5) + rng.normal(0, 0.3)
        self.xr = self.xl + self.lanes * self.lane_w
        walk = {"city": (2.0, 4.0), "suburb": (1.5, 3.0), "highway": (0.0, 0.0)}[kind]
        verge = {"city": (0.0, 1.5), "suburb": (1.0, 6.0), "highway": (3.0, 12.0)}[kind]
        # Per side (s = -1 left, +1 right): distance to the road edge, sidewalk, grass verge.
        self.edge = {-1: -self.xl, 1: self.xr}
        self.walk = {s: U(*walk) for s in (-1, 1)}
        self.verge = {s: U(*verge) * (rng.random() < 0.8) for s in (-1, 1)}
        self.out = {s: self.edge[s] + self.walk[s] + self.verge[s] for s in (-1, 1)}
        self.rail = int(rng.choice([-1, 1])) if rng.random() < 0.07 else 0  # side with a train
        self.cross = U(18, 55) if rng.random() < (0.05 if hwy else 0.4) else 0.0  # a junction
        self.cross_w = U(8, 14)
        self.bridge = U(25, 70) if rng.random() < 0.06 else 0.0

    def lane_x(self, i: int) -> float:
        return self.xl + (i + 0.5) * self.lane_w

    def free(self, z0: float, z1: float) -> bool:
        """Whether the stretch z0..z1 beside the road is clear of the cross street."""
        c, half = self.cross, self.cross_w / 2 + 2
        return not c or z1 < c - half or z0 > c + half


def _ground(cv: _Canvas, rng: np.random.Generator, lay: _Layout) -> None:
    road, walk = _pick(rng, ROAD_C, 0.1, 3), _pick(rng, WALK_C, 0.1, 4)
    cv.poly([(0, cv.cy), (cv.w, cv.cy), (cv.w, cv.h), (0, cv.h)], _pick(rng, TERRAIN_C), TERRAIN)
    cv.ground(lay.xl, lay.xr, 1, Z_FAR, road, ROAD)
    for s in (-1, 1):
        e, w, out = lay.edge[s], lay.walk[s], lay.out[s]
        if w:
            cv.ground(s * e, s * (e + w), 1, Z_FAR, walk, SIDEWALK)
            cv.ground(s * e, s * (e + 0.25), 1, Z_FAR, _shade(walk, 1.15), SIDEWALK)  # curb
            z = 2.0
            while cv.f * cv.cam_h * 1.5 / z**2 > 3:  # paving joints, until under 3 px apart
                cv.ground(s * e, s * (e + w), z, z + 0.06, _shade(walk, 0.85), None)
                z += 1.5
        if lay.verge[s]:
            cv.ground(s * (e + w), s * out, 1, Z_FAR, _pick(rng, TERRAIN_C), TERRAIN)
        if lay.rail == s:  # a gravel rail bed with two rails
            cv.ground(s * out, s * (out + 6), 1, Z_FAR, _vary(rng, (110, 100, 90)), VOID)
            for d in (2.2, 3.8):
                cv.ground(s * (out + d), s * (out + d + 0.1), 1, Z_FAR, (60, 55, 50), None)
    for x, z, dx, dz, k in rng.uniform(0, 1, (rng.integers(0, 4), 5)).tolist():  # patches
        x, z = lay.xl + x * (lay.xr - lay.xl), 4 + 36 * z
        cv.ground(x, x + 0.5 + 2 * dx, z, z + 1 + 5 * dz, _shade(road, 0.75 + 0.45 * k), None)
    if lay.cross:
        cv.ground(-300, 300, lay.cross - lay.cross_w / 2, lay.cross + lay.cross_w / 2, road, ROAD)
    _lane_marks(cv, rng, lay)


def _lane_marks(cv: _Canvas, rng: np.random.Generator, lay: _Layout) -> None:
    white = _vary(rng, (225, 225, 220), 0.08, 4)
    yellow = _vary(rng, (220, 180, 50), 0.08, 4)
    dash, gap, phase = rng.uniform(2.5, 3.5), rng.uniform(5, 9), rng.uniform(0, 8)
    for i in range(1, lay.lanes):
        x = lay.xl + i * lay.lane_w
        if i == lay.oncoming:  # double yellow between the two directions
            for d in (-0.12, 0.08):
                cv.ground(x + d, x + d + 0.1, 1, Z_FAR, yellow, ROAD)
            continue
        z = 2.0 + phase
        while cv.f * cv.cam_h * (1 / z - 1 / (z + dash)) > 0.7:  # stop once under a pixel
            cv.ground(x - 0.07, x + 0.07, z, z + dash, white, ROAD)
            z += dash + gap
    if rng.random() < 0.8:
        for x in (lay.xl + 0.15, lay.xr - 0.3):
            cv.ground(x, x + 0.15, 1, Z_FAR, white, ROAD)
    if lay.cross and rng.random() < 0.8:  # zebra crossing before the junction
        z = lay.cross - lay.cross_w / 2 - 3.5
        for x in np.arange(lay.xl + 0.3, lay.xr - 0.3, 1.0):
            cv.ground(x, x + 0.5, z, z + 3, white, ROAD)


# ---------------------------------------------------------------- structures and vegetation
def _building(cv, rng, s, xn, z0, z1, height, color) -> None:
    """A block whose facade (the side facing the road) is at ``|x| = xn``, with windows."""
    cv.box(*((xn, xn + 15) if s > 0 else (-xn - 15, -xn)), 0, height, z0, z1, color, BUILDING)
    floor, bay = rng.uniform(3.0, 3.6), rng.uniform(2.5, 4.0)
    if cv.size(max(z0, 1)) * floor < 4:  # too far for windows to show
        return
    xf, pier = s * xn, _shade(color, 0.74)  # the facade is in shade, like box()'s side faces
    night = cv.light == "night"
    glass = (40, 42, 48) if night else [(60, 66, 80), (120, 146, 172)][rng.random() < 0.3]
    cv.side(xf, floor * 0.3, height - 0.6, z0, z1, _vary(rng, glass), None)
    for y in np.arange(floor * 0.75, height - 0.6, floor):  # slabs between rows of windows
        cv.side(xf, y, y + floor * 0.5, z0, z1, pier, None)
    z = z0 + bay * 0.5
    while z < z1 - 0.5 and cv.f * xn * bay / max(z, 1) ** 2 > 2.5:  # piers, until under 2.5 px
        cv.side(xf, 0, height, z, z + bay * 0.45, pier, None)
        z += bay
    if rng.random() < 0.5:  # a shop front at street level
        cv.side(xf, 0.2, floor * 0.8, max(z0, 1), z1, _pick(rng, CLOTH_C, 0.3, 20), None)
    for _ in range(int((z1 - z0) * height / 40) if night else 0):  # lit windows at night
        y, z = floor * (rng.integers(0, int(height / floor)) + 0.35), rng.uniform(z0, z1 - 1.2)
        pts = cv.project([(xf, y, z), (xf, y + 1.2, z), (xf, y + 1.2, z + 1.2), (xf, y, z + 1.2)])
        cv.poly(pts, (230, 190, 120), None)
        cv.dl.polygon(pts, fill=(140, 110, 60))


def _tree(cv, rng, x, z, r, color, conifer=False) -> None:
    s = cv.size(z)
    if r * s < 1:
        return
    trunk = 1.0 if conifer else rng.uniform(1.5, 3.5)
    tw = 0.12 + 0.04 * r
    cv.box(x - tw, x + tw, 0, trunk + r * 0.6, z, z + 2 * tw, _vary(rng, (72, 58, 44)), VEG)
    if conifer:  # stacked triangles
        for k in range(3):
            y0, half = trunk + k * r * 0.9, r * (1 - 0.25 * k)
            pts = [(x - half, y0, z), (x + half, y0, z), (x, y0 + r * 1.6, z)]
            cv.poly3(pts, _vary(rng, _shade(color, 0.8), 0.1, 5), VEG)
        return
    for dx, dy, k, e, c in rng.standard_normal((5 if r * s > 5 else 2, 5)).tolist():
        u, v = cv.p(x + 0.4 * r * dx, trunk + r + 0.3 * r * dy, z)  # blobs of foliage
        rp = r * s * (0.7 + 0.08 * k)
        cv.ellipse(u, v, rp, rp * (0.85 + 0.05 * e), _shade(color, 1 + 0.1 * c), VEG)


def _wall(cv, rng, x, z0, z1, height, color, cls) -> None:
    """A piece of hedge, wall, or fence (posts, rails, bars: its label covers the gaps too)."""
    if cls != FENCE:
        cv.box(x - 0.2, x + 0.2, 0, height, z0, z1, color, cls)
        if cls == VEG:  # a bumpy top
            u, v = cv.p(x, height, z0)
            cv.ellipse(u, v, 0.5 * cv.size(z0), 0.3 * cv.size(z0), _shade(color, 1.1), VEG)
        else:  # coping
            cv.side(x, height - 0.15, height, z0, z1, _shade(color, 1.2), None)
        return
    z0 = max(z0, 1.0)
    cv.dm.polygon(cv.project([(x, 0, z0), (x, height, z0), (x, height, z1), (x, 0, z1)]), FENCE)
    for y in (0.1, height - 0.12):  # rails
        cv.side(x, y, y + 0.1, z0, z1, color, FENCE)
    if cv.f * abs(x) * 0.15 / z0**2 > 2:  # bars, where they are more than 2 px apart
        for zz in np.arange(z0, z1, 0.15):
            cv.side(x, 0.1, height, zz, zz + 0.05, color, FENCE)
    else:  # else a mesh of the fence colour
        cv.side(x, 0.1, height, z0, z1, _shade(color, 0.85), FENCE)
    cv.box(x - 0.05, x + 0.05, 0, height + 0.1, z0, z0 + 0.1, _shade(color, 0.7), FENCE)


def _pole(cv, rng, x, z, height, arm, color) -> None:
    """A pole; ``arm`` (signed metres towards the road) makes it a street lamp."""
    cv.box(x - 0.09, x + 0.09, 0, height, z, z + 0.18, color, POLE)
    if arm:
        xa = x + arm
        cv.box(min(x, xa), max(x, xa), height - 0.2, height, z, z + 0.2, color, POLE)
        cv.box(xa - 0.35, xa + 0.35, height - 0.4, height - 0.1, z, z + 0.3, color, POLE)
        cv.glow(xa, height - 0.5, z, 0.3, (255, 220, 150))


def _traffic_light(cv, rng, x, y, z) -> None:
    housing = (35, 35, 35) if rng.random() < 0.8 else (170, 150, 40)
    cv.box(x - 0.2, x + 0.2, y, y + 1.0, z, z + 0.3, _vary(rng, housing, 0.2, 5), LIGHT)
    state, r = rng.integers(3), 0.12 * cv.size(z)
    for i, lamp in enumerate([(255, 50, 40), (255, 180, 0), (60, 255, 140)]):
        u, v = cv.p(x, y + 0.83 - 0.33 * i, z)
        cv.ellipse(u, v, r, r, lamp if i == state else (45, 45, 45), LIGHT)
        if i == state:
            cv.glow(x, y + 0.83 - 0.33 * i, z, 0.25, lamp)


def _sign(cv, rng, x, z, height, size) -> None:
    """A sign on a post: a round, triangular, square, octagonal or diamond plate with a rim."""
    cv.box(x - 0.05, x + 0.05, 0, height, z, z + 0.1, _vary(rng, (120, 120, 122)), POLE)
    u, v = cv.p(x, height - size / 2, z - 0.05)
    r, shape = size * cv.size(z) / 2, rng.integers(6)
    rim, face, sides, turn = [
        ((200, 30, 30), (235, 235, 235), 0, 0),  # prohibition
        ((30, 70, 160), (30, 70, 160), 0, 0),  # mandatory
        ((200, 30, 30), (235, 235, 235), 3, -math.pi / 2),  # warning
        ((200, 30, 30), (200, 30, 30), 8, math.pi / 8),  # stop
        ((235, 235, 235), (30, 110, 60), 4, math.pi / 4),  # guide
        ((30, 30, 30), (235, 200, 40), 4, 0),  # US warning diamond
    ][shape]
    for k, col in ((1.0, rim), (0.75, face)):
        col = _vary(rng, col, 0.1, 4)
        if not sides:
            cv.ellipse(u, v, r * k, r * k, col, SIGN)
            continue
        angles = [turn + 2 * math.pi * i / sides for i in range(sides)]
        cv.poly([(u + r * k * math.cos(a), v + r * k * math.sin(a)) for a in angles], col, SIGN)


# ---------------------------------------------------------------- vehicles and people
def _vehicle(cv, rng, cls, x, z, front=False, crossing=False, lit=True) -> None:
    """A car, truck, bus or train built from boxes: body, dark glass, wheels and lights.

    ``front``: we see its front (oncoming). ``crossing``: it drives across the road. Parts are
    placed in the vehicle's frame (``a`` across, ``b`` along from the near end) and drawn far to
    near, so that the body hides the far wheels and the cabin sits on the body.
    """
    U = rng.uniform
    pickup = cls == TRUCK and rng.random() < 0.35
    w, ln, h = {
        CAR: (U(1.7, 1.95), U(3.9, 4.9), U(1.4, 1.75)),
        TRUCK: (2.45, U(6, 10), U(3.0, 3.9)) if not pickup else (1.95, 5.3, 1.85),
        BUS: (2.55, U(10, 12.5), U(3.0, 3.3)),
        TRAIN: (3.0, U(40, 80), U(3.6, 4.0)),
    }[cls]
    if cv.size(z) * w < 1.5:
        return
    body = _pick(rng, {BUS: BUS_C, TRAIN: TRAIN_C}.get(cls, CAR_C), 0.1, 6)
    glass, dark = _vary(rng, (38, 44, 54), 0.2, 5), (22, 22, 24)

    def part(a0, a1, b0, b1, y0, y1, color):
        xs, zs = (x + a0, x + a1), (z + b0, z + b1)
        if crossing:
            xs, zs = (x + b0 - ln / 2, x + b1 - ln / 2), (z + a0 + w / 2, z + a1 + w / 2)
        cv.box(min(xs), max(xs), y0, y1, min(zs), max(zs), color, cls, top=color is not dark)

    r = 0.33 if cls == CAR or pickup else 0.5
    sx, sz = (ln, w) if crossing else (w, ln)  # the footprint, for a shadow on the road
    cv.ground(x - sx / 2 - 0.1, x + sx / 2 + 0.1, z, z + sz, (28, 28, 30), None, y=0.01)
    for b in (ln - 0.7 - 2 * r, 0.7):  # wheels, the far axle first
        for a in (-w / 2,) if crossing else (-w / 2, w / 2 - 0.34):
            part(a, a + 0.34, b, b + 2 * r, 0, 2 * r, dark)
    if cls == CAR or pickup:
        cab = (0.22, 0.75) if front else (0.45, 0.8) if pickup else (0.2, 0.7)
        part(-w / 2, w / 2, 0, ln, 0.3, 0.6 * h, body)
        part(-w / 2 + 0.1, w / 2 - 0.1, cab[0] * ln, cab[1] * ln, 0.6 * h, h - 0.06, glass)
        part(-w / 2 + 0.12, w / 2 - 0.12, cab[0] * ln + 0.1, cab[1] * ln - 0.1, h - 0.06, h, body)
        y_lamp = 0.48 * h
    elif cls == TRUCK:
        cargo = _vary(rng, (215, 215, 212)) if rng.random() < 0.6 else _pick(rng, CAR_C)
        cab, box = (0, 2.4) if front else (ln - 2.4, ln), (2.5, ln) if front else (0, ln - 2.5)
        parts = [(*box, 0.9, h, cargo), (0, ln, 0.5, 0.9, dark), (*cab, 0.5, 2.9, body)]
        for b0, b1, y0, y1, col in parts if front else parts[::-1]:
            part(-w / 2, w / 2, b0, b1, y0, y1, col)
        if front and not crossing:  # the windscreen
            cv.front(x - w / 2 + 0.15, x + w / 2 - 0.15, 1.7, 2.7, z - 0.01, glass, cls)
        elif not crossing:  # the cargo doors: a seam, hinges and a reflective bumper
            cv.front(x - 0.03, x + 0.03, 1.0, h - 0.1, z - 0.01, _shade(cargo, 0.6), cls)
            for y in (1.4, h - 0.5):
                cv.front(
                    x - w / 2 + 0.1, x + w / 2 - 0.1, y, y + 0.06, z - 0.01, _shade(cargo, 0.7), cls
                )
            cv.front(x - w / 2, x + w / 2, 0.5, 0.62, z - 0.01, (200, 40, 30), cls)
        y_lamp = 0.7
    else:  # bus or train: one long box with a band of windows along the side
        part(-w / 2, w / 2, 0, ln, 0.3 if cls == BUS else 0.6, h, body)
        xs = x - w / 2 if x > w / 2 else x + w / 2 if x < -w / 2 else 0  # the visible side
        if xs and not crossing:
            cv.side(xs, 1.2, h - 0.45, z + 0.4, z + ln - 0.4, glass, cls)
            for b in np.arange(1.5, ln - 0.5, 2.2 if cls == BUS else 3.5):
                if cv.f * abs(xs) * 2 / (z + b) ** 2 < 2.5:  # pillars until under 2.5 px apart
                    break
                cv.side(xs, 1.2, h - 0.45, z + b, z + b + 0.25, body, cls)
            if cls == TRAIN:
                cv.side(xs, 0.95, 1.15, z + 0.2, z + ln, _pick(rng, CLOTH_C), cls)
        cv.front(x - w / 2 + 0.15, x + w / 2 - 0.15, 0.9 if front else 1.6, h - 0.4, z, glass, cls)
        if cls == BUS:  # the route display
            cv.front(x - w / 2 + 0.3, x + w / 2 - 0.3, h - 0.35, h - 0.1, z, (255, 150, 30), cls)
        y_lamp = 0.7
    if crossing:
        return
    for sgn in (-1, 1):  # head or tail lights, then the number plate
        xl = x + sgn * (w / 2 - 0.22)
        lamp = (245, 245, 225) if front else (200, 20, 20)
        cv.front(xl - 0.15, xl + 0.15, y_lamp, y_lamp + 0.13, z - 0.02, lamp, cls)
        if lit:
            cv.glow(xl, y_lamp + 0.06, z - 0.02, 0.25 if front else 0.12, _shade(lamp, 1.05))
    cv.front(x - 0.26, x + 0.26, y_lamp - 0.17, y_lamp - 0.05, z - 0.02, (215, 215, 205), cls)


def _figure(cv, rng, x, z, parts, flip=1, scale=1.0, spread=0.0) -> None:
    """Draw a figure of ``parts`` standing at ``(x, z)``; ``spread`` opens the legs (a stride)."""
    u0, v0 = cv.p(x, 0, z)
    s = cv.size(z) * scale
    if s < 2:
        return
    colors = {
        "shirt": _pick(rng, CLOTH_C, 0.2, 15),
        "pants": _pick(rng, CLOTH_C[:2] + [(40, 50, 90)]),
        "skin": _pick(rng, SKIN_C, 0.1, 5),
        "hair": _pick(rng, CLOTH_C[:2] + [(110, 80, 50)]),
        "helmet": _pick(rng, CAR_C),
        "paint": _pick(rng, CAR_C, 0.1, 8),
        "dark": (24, 24, 26),
        "metal": (90, 90, 95),
        "red": (200, 20, 20),
    }
    for shape, key, cls, pts, size in parts:
        xy = [
            (u0 + flip * s * (a + math.copysign(spread, a) * max(0, 0.9 - b)), v0 - s * b)
            for a, b in pts
        ]
        if shape == "poly":
            cv.poly(xy, colors[key], cls)
        elif shape == "line":
            width = max(1, round(size * s))
            cv.di.line(xy, fill=colors[key], width=width, joint="curve")
            cv.dm.line(xy, fill=cls, width=width, joint="curve")
        else:
            ring = max(1, round(0.2 * size * s)) if shape == "ring" else 0
            cv.ellipse(*xy[0], size * s, size * s, colors[key], cls, width=ring)


def _rider(cv, rng, cls, x, z, side: bool, flip: int = 1) -> None:
    """A person riding a bicycle or motorcycle, seen from the side or from behind."""
    if side:
        _figure(cv, rng, x, z, BIKE_SIDE if cls == BIKE else MOTO_SIDE, flip)
        _figure(cv, rng, x, z, RIDER_SIDE, flip)
    else:
        _figure(cv, rng, x, z, BIKE_BACK if cls == BIKE else MOTO_BACK)
        _figure(cv, rng, x, z, RIDER_BACK)
        cv.glow(x, 0.77, z, 0.1, (230, 20, 20))


# ---------------------------------------------------------------- the scene
def _horizon(cv, rng, kind) -> None:
    """A hazy skyline or tree line far away, so that the road does not end in bare sky."""
    haze = SKY_C[cv.light][1]
    u = rng.uniform(-20, 0)
    while u < cv.w:
        tree = rng.random() < (0.25 if kind == "city" else 0.8)
        dw = cv.w * rng.uniform(0.02, 0.08)
        hp = cv.h * (rng.uniform(0.01, 0.05) if tree else rng.uniform(0.02, 0.12))
        base = _pick(rng, VEG_C if tree else BUILD_C)
        col = tuple(int(0.55 * c + 0.45 * hz) for c, hz in zip(base, haze, strict=True))
        if tree:
            cv.ellipse(u + dw / 2, cv.cy, dw * 0.7, hp, col, VEG)
        else:
            top, bottom = cv.cy - hp, cv.cy + 1
            cv.poly([(u, bottom), (u, top), (u + dw, top), (u + dw, bottom)], col, BUILDING)
        u += dw * rng.uniform(0.6, 1.3)


def _signal_post(cv, rng, x, z, arm_to) -> None:
    """A traffic-light post; with ``arm_to`` a mast arm reaching over the lanes with more lights."""
    color, height = _vary(rng, (90, 92, 88)), 3.6 if arm_to is None else 6.5
    cv.box(x - 0.13, x + 0.13, 0, height, z, z + 0.26, color, POLE)
    _traffic_light(cv, rng, x, 2.4, z - 0.2)
    if arm_to is not None:
        cv.box(min(x, arm_to), max(x, arm_to), height - 0.3, height - 0.1, z, z + 0.2, color, POLE)
        for k in range(rng.integers(1, 4)):
            _traffic_light(cv, rng, arm_to + (x - arm_to) * k / 3, height - 1.4, z - 0.2)


def _bridge(cv, rng, lay) -> None:
    """An overpass deck on two piers; unlabelled (255) in BDD100K, like the ego vehicle."""
    col, z = _vary(rng, (140, 136, 128)), lay.bridge
    cv.box(-400, 400, 5.2, rng.uniform(6.2, 7.5), z, z + 10, col, VOID)
    for s in (-1, 1):
        x = s * (lay.edge[s] + lay.walk[s] + 0.8)
        cv.box(x - 0.6, x + 0.6, 0, 5.2, z + 2, z + 8, _shade(col, 0.9), VOID)


def _hood(cv, rng) -> None:
    """The ego vehicle's bonnet across the bottom of the frame, with a glossy band."""
    top, drop = cv.h * (1 - rng.uniform(0.07, 0.16)), cv.h * rng.uniform(0.02, 0.07)
    pts = [(u, top + drop * (2 * u / cv.w - 1) ** 2) for u in np.linspace(0, cv.w, 9)]
    color = _pick(rng, CAR_C, 0.1, 5)
    cv.poly(pts + [(cv.w, cv.h), (0, cv.h)], _shade(color, 0.6), VOID)
    band = [(u, v + cv.h * 0.015) for u, v in pts] + [(u, v + cv.h * 0.04) for u, v in pts[::-1]]
    cv.poly(band, _shade(color, 0.85), VOID)


class _Layer(list):
    """Planned draw calls ``(depth, draw, args)``, drawn far to near."""

    def add(self, z: float, draw, *args) -> None:
        self.append((z, draw, args))

    def draw(self, cv: _Canvas, rng: np.random.Generator) -> None:
        for _, draw, args in sorted(self, key=lambda item: -item[0]):  # stable for ties
            draw(cv, rng, *args)


def _plan_backdrop(rng, lay: _Layout, s: int, back: _Layer) -> None:
    """Buildings (or a train) and a tree line on side ``s``: behind everything on the street."""
    U, kind = rng.uniform, lay.kind
    city, sub, hwy = kind == "city", kind == "suburb", kind == "highway"
    out = lay.out[s]
    if lay.rail == s:  # a train instead of buildings
        back.add(0, _vehicle, TRAIN, s * (out + 3), U(8, 40), False, False, False)
    elif not hwy or rng.random() < 0.3:
        z = U(20, 80) if hwy else U(-20, 5)
        while z < 160:
            ln = U(8, 30) if city else U(8, 16) if sub else U(20, 60)
            if lay.free(z, z + ln) and rng.random() < (0.85 if city else 0.7):
                xn = out + (U(0, 1.5) if city else U(3, 10) if sub else U(15, 40))
                h = U(7, 32) if city else U(4, 9) if sub else U(5, 12)
                back.add(z + ln, _building, s, xn, z, z + ln, h, _pick(rng, BUILD_C))
            z += ln + (U(0, 3) if city else U(3, 15) if sub else U(10, 60))
    if rng.random() < (0.3 if city else 0.6 if sub else 0.9):
        x, z, r = out + U(2, 10) + 8 * (lay.rail == s), U(-5, 5), U(2.5, 5)
        conifer, color = rng.random() < 0.3, _pick(rng, VEG_C)
        while z < 250:  # +1000 on the depth: behind the buildings, which stand nearer the road
            back.add(z + 1000, _tree, s * (x + U(0, 4)), z, r * U(0.7, 1.3), color, conifer)
            z += r * U(0.8, 1.6) + 0.04 * z  # fewer trees far away, where they are small


def _plan_roadside(rng, lay: _Layout, s: int, street: _Layer) -> None:
    """Trees, hedges, walls, fences, poles, signs, traffic lights, pedestrians, parked vehicles
    on side ``s``. Long things come in 4 m pieces, so that sorting by depth stays right."""
    U, kind = rng.uniform, lay.kind
    city, sub, hwy = kind == "city", kind == "suburb", kind == "highway"
    e, walk = lay.edge[s], lay.walk[s]
    if city and walk and rng.random() < 0.4:  # trees in pits along the curb
        z, color = U(4, 12), _pick(rng, VEG_C)
        while z < 110:
            if lay.free(z, z):
                street.add(z, _tree, s * (e + 0.9), z, U(1.5, 3), color)
            z += U(8, 16)
    for z in U(3, 100, rng.poisson(5 if sub else 1.5 if hwy else 0)):  # trees in yards
        x = s * (e + walk + U(0.5, lay.verge[s] + 2))
        street.add(z, _tree, x, z, U(1.5, 4.5), _pick(rng, VEG_C))
    chance = {VEG: 0.3 if sub else 0.1, WALL: 0.4 if hwy else 0.3, FENCE: 0.3 if city else 0.5}
    for cls, p in chance.items():
        if rng.random() < p:  # a hedge, a wall or a fence along the back of the sidewalk
            z0 = U(0, 30)
            z1 = z0 + U(10, 60) if lay.free(z0, z0 + 70) else lay.cross - lay.cross_w / 2 - 2
            h = U(2.5, 4.5) if cls == WALL and hwy else U(0.8, 2.2)
            x = s * (e + walk + 0.3 + (U(1, 3) if hwy else 0))
            col = _pick(rng, {VEG: VEG_C, WALL: WALL_C, FENCE: FENCE_C}[cls], 0.08)
            for z in np.arange(z0, z1, 4.0):
                street.add(z, _wall, x, z, z + 4, h, col, cls)
    lamps, wooden = rng.random() < 0.6, sub and rng.random() < 0.35
    for on, x, z, step, height, arm, color in (
        (lamps, e + 0.5, U(8, 30), (22, 35), U(7, 10), U(1.2, 2.5), (100, 102, 100)),
        (wooden, e + walk + 0.5, U(10, 35), (30, 45), U(9, 11), 0, (95, 75, 55)),
    ):
        color = _vary(rng, color)
        while on and z < 150:  # street lamps or utility poles at regular steps
            street.add(z, _pole, s * x, z, height, -s * arm, color)
            z += U(*step)
    for z in U(6, 70, rng.poisson(1.5 if city else 0.8)):
        size = U(1.2, 2.2) if hwy else U(0.6, 0.9)
        street.add(z, _sign, s * (e + 0.4 + size * hwy), z, U(2.2, 3.2) + size, size)
    corners = (lay.cross - lay.cross_w / 2 - 1, lay.cross + lay.cross_w / 2 + 1)
    for z in corners if lay.cross else ():
        mast = s == 1 and z < lay.cross and rng.random() < 0.7  # lights over the lanes too
        arm_to = lay.lane_x(max(0, lay.lanes - 2)) if mast else None
        street.add(z, _signal_post, s * (e + 0.6), z, arm_to)
    for z in U(3, 60, rng.poisson(2.5 if city else 0.6 if sub else 0) if walk > 1 else 0):
        x = s * (e + U(0.4, walk - 0.3))
        street.add(z, _figure, x, z, PERSON_PARTS, 1, U(0.85, 1.08), U(-0.12, 0.12))
    for z in U(4, 30, rng.integers(1, 4) if city and walk > 1.5 and rng.random() < 0.12 else 0):
        parts = BIKE_SIDE if rng.random() < 0.5 else MOTO_SIDE  # parked
        street.add(z, _figure, s * (e + U(0.5, walk - 0.5)), z, parts, int(rng.choice([-1, 1])))
    if not hwy and rng.random() < (0.7 if city else 0.5):  # parked cars along the curb
        z = U(3, 12)
        while z < 70:
            if rng.random() < 0.75 and lay.free(z, z + 6):  # unlit, facing their lane's way
                front = s < 0 and lay.oncoming > 0
                street.add(z, _vehicle, CAR, s * (e - 1.1), z, front, False, False)
            z += U(5.5, 9)


def _plan_traffic(rng, lay: _Layout, street: _Layer) -> None:
    """Vehicles in the lanes, cross traffic at a junction, riders, people crossing."""
    U, kind = rng.uniform, lay.kind
    ego = int(-lay.xl // lay.lane_w)
    probs = [0.62, 0.36, 0.02, 0.0] if kind == "highway" else [0.58, 0.2, 0.19, 0.03]
    for i in range(lay.lanes):
        last = -99.0
        n = rng.poisson(1.0 if kind == "suburb" else 2.0)
        for z in sorted(U(10 if i == ego else 4, 90, n)):
            if z - last < 12:  # keep a gap
                continue
            last, x = z, lay.lane_x(i) + rng.normal(0, 0.25)
            cls = int(rng.choice([CAR, TRUCK, BUS, MOTO], p=probs))
            if cls == MOTO:
                street.add(z, _rider, MOTO, x, z, False)
            else:
                street.add(z, _vehicle, cls, x, z, i < lay.oncoming)
    near = lay.cross - lay.cross_w / 2 - 2  # the zebra crossing
    if lay.cross and rng.random() < 0.5:
        z = lay.cross + U(-3, 1)
        street.add(z, _vehicle, CAR, U(-30, 30), z, False, True)
    for _ in range(rng.integers(1, 4) if lay.cross and rng.random() < 0.35 else 0):
        z = near + U(0, 1.5)
        street.add(z, _figure, U(lay.xl, lay.xr), z, PERSON_PARTS, 1, U(0.85, 1.08), 0.1)
    for _ in range(rng.integers(1, 3) if rng.random() < 0.2 else 0):  # cyclists, motorcyclists
        cls = int(rng.choice([MOTO, BIKE]))
        if lay.cross and rng.random() < 0.4:
            flip = int(rng.choice([-1, 1]))
            street.add(near, _rider, cls, U(lay.xl, lay.xr), near, True, flip)
        else:
            z = U(6, 40)
            street.add(z, _rider, cls, lay.xr - U(0.6, 1.5), z, False)


def _finish(cv, rng) -> tuple[np.ndarray, np.ndarray]:
    """Texture by class, then light (gain, tint, headlights, glows) and sensor grain."""
    h, w, mask = cv.h, cv.w, np.asarray(cv.mask)
    coarse, leaf = _smooth(rng, h, w, max(3, w // 48)), _smooth(rng, h, w, 2)
    grain = rng.integers(0, 256, (h, w), dtype=np.uint8).astype(np.float32) - 127.5
    g = np.full((h, 1), rng.uniform(*GAIN[cv.light]), np.float32)
    if cv.light == "night":  # our own headlights light the road just ahead
        rows = np.clip((np.arange(h, dtype=np.float32) - cv.cy) / (h - cv.cy), 0, 1)[:, None]
        g = g + (0.95 - g) * rows**2
    g = np.where(mask == SKY, np.float32(1), g)  # the sky colours already carry the light
    factor = (1 + _COARSE[mask] * coarse + _LEAF[mask] * leaf) * g
    grain *= _GRAIN[mask] * (1 / 74) * g  # uniform noise scaled to unit spread, then per class
    tint = np.asarray(TINT.get(cv.light, (1, 1, 1))) * rng.uniform(0.97, 1.03, 3)
    img = np.asarray(cv.img, np.float32)  # a new array: the in-place steps below are safe
    img *= factor[..., None]
    img += grain[..., None]
    img *= tint.astype(np.float32)
    if cv.lights is not None:  # a sharp core plus a halo (shrunk and grown back: a cheap blur)
        halo = np.asarray(cv.lights.reduce(4).resize((w, h), Image.BILINEAR), np.float32)
        halo += np.asarray(cv.lights, np.float32) * (0.8 / 1.5)
        img += 1.5 * halo
    return np.clip(img, 0, 255).astype(np.uint8), mask.copy()


def render_scene(
    rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one random driving scene.

    Returns:
        ``(image, mask)``: image uint8 (height, width, 3) RGB; mask uint8 (height, width) with
        BDD100K train ids 0..18 and 255 where BDD100K leaves pixels unlabelled (ego vehicle,
        overpass, rail bed).
    """
    light = str(rng.choice(["day", "overcast", "dusk", "night"], p=[0.62, 0.13, 0.15, 0.1]))
    kind = str(rng.choice(["city", "suburb", "highway"], p=[0.5, 0.3, 0.2]))
    cv = _Canvas(rng, height, width, light)
    lay = _Layout(rng, kind)
    _horizon(cv, rng, kind)
    _ground(cv, rng, lay)
    back, street = _Layer(), _Layer()
    for s in (-1, 1):
        _plan_backdrop(rng, lay, s, back)
        _plan_roadside(rng, lay, s, street)
    if lay.bridge:
        back.add(lay.bridge, _bridge, lay)
    _plan_traffic(rng, lay, street)
    back.draw(cv, rng)
    street.draw(cv, rng)
    if rng.random() < 0.7:
        _hood(cv, rng)
    return _finish(cv, rng)


# ---------------------------------------------------------------- writing the dataset
def _names(seed: int, counts: dict[str, int]) -> dict[str, list[str]]:
    """Official-looking names (``xxxxxxxx-xxxxxxxx``), unique across splits, fixed by the seed.

    Each split draws from its own generator, so a split's first N names do not change with
    the size of the other splits or with its own size.
    """
    seen: set[str] = set()
    out: dict[str, list[str]] = {split: [] for split in counts}
    for split, n in counts.items():
        rng = np.random.default_rng([seed, SPLITS.index(split), 0x6E616D65])
        while len(out[split]) < n:
            name = "{:08x}-{:08x}".format(*rng.integers(0, 2**32, 2).tolist())
            if name not in seen:  # a clash is astronomically rare, but names must be unique
                seen.add(name)
                out[split].append(name)
    return out


def _paths(root: Path, split: str, name: str) -> tuple[Path, ...]:
    """The image, and for labelled splits the mask and the colour map, of one sample."""
    image = root / "images" / "10k" / split / f"{name}.jpg"
    if split == "test":  # like the official release: no public test labels
        return (image,)
    labels = root / "labels" / "sem_seg"
    return (
        image,
        labels / "masks" / split / f"{name}.png",
        labels / "colormaps" / split / f"{name}.png",
    )


def _write_one(job: tuple[Path, str, int, str, int, int, int]) -> None:
    root, split, index, name, height, width, seed = job
    rng = np.random.default_rng([seed, SPLITS.index(split), index])  # same for any worker
    image, mask = render_scene(rng, height, width)
    paths = _paths(root, split, name)
    with atomic_path(paths[0]) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=90)
    if len(paths) == 1:
        return
    with atomic_path(paths[1]) as tmp:
        Image.fromarray(mask).save(tmp, format="PNG", compress_level=3)
    colormap = Image.fromarray(mask)
    colormap.putpalette(_PALETTE)  # makes it mode 'P'
    with atomic_path(paths[2]) as tmp:
        colormap.save(tmp, format="PNG", compress_level=3)


def make_dataset(
    out: Path,
    train: int = 200,
    val: int = 50,
    test: int = 50,
    height: int = 256,
    width: int = 448,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Write a synthetic dataset in the official BDD100K layout and return ``OUT/bdd100k``.

    Writes ``images/10k/{train,val,test}/NAME.jpg`` and, for train and val,
    ``labels/sem_seg/masks/SPLIT/NAME.png`` (mode 'L': train ids 0..18 and 255) and
    ``labels/sem_seg/colormaps/SPLIT/NAME.png`` (mode 'P' with the official palette). Each
    file is written under a temporary name and renamed, so a crash leaves no half-written
    file. The bytes depend on every argument except ``workers``. Re-running with the same
    arguments rewrites the same files; a folder holding other files is refused.
    """
    counts = {"train": train, "val": val, "test": test}
    if min(counts.values()) < 0:
        raise BddsegError(f"image counts must be >= 0, got {counts}")
    if height < 32 or width < 32:
        raise BddsegError(f"height and width must be at least 32, got {height}x{width}")
    root = Path(out) / "bdd100k"
    names = _names(seed, counts)
    jobs = [(root, s, i, n, height, width, seed) for s in SPLITS for i, n in enumerate(names[s])]
    # Writing over another dataset would silently mix the two: only our own files may exist
    # (a re-run with the same arguments), besides hidden temporaries of a killed run.
    planned = {p for job in jobs for p in _paths(root, job[1], job[3])}
    for p in root.rglob("*") if root.is_dir() else ():
        if p.is_file() and p not in planned and not p.name.startswith("."):
            raise BddsegError(
                "holds a file that this dataset would not write: use an empty folder", p
            )
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            _write_one(job)
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    return root
