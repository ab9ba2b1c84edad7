"""Triangle meshes as a representation (``mesh``).

A mesh holds vertex positions, triangles, and either a UV atlas with a base-colour texture or,
as a fallback, one colour per vertex. Geometry and texture coordinates have their own indices
per triangle corner (as in OBJ), so seams in the atlas do not cut the surface apart.

* ``render_image`` rasterises (``radistill.render.raster``: nvdiffrast on CUDA when installed,
  the PyTorch reference elsewhere); ``render(rays)`` volume-renders the volumetric view below,
  for callers that need arbitrary rays.
* ``query`` is the volumetric view (``mesh_volume``): a density from the signed distance to the
  surface, with a soft band ``band`` grid steps wide, and the colour of the nearest surface point.
  Open surfaces (pieces with a border, parts thinner than a cell) count as sheets one band
  thick, opaque to a ray crossing.
* ``from_teacher`` runs marching cubes on the teacher's density, removes floating pieces,
  decimates, unwraps a UV atlas and starts the texture from the teacher's colours
  (``meshing``); the distill engine then bakes the texture against the teacher's renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radistill.errors import ConfigError
from radistill.fields.base import FieldOutputs, RenderOutputs, Representation, render_volumetric
from radistill.render.raster import edge_table, rasterize, sample_texture
from radistill.render.splat import Camera


@dataclass
class MeshConfig:
    """Options of a mesh: how it is extracted from a teacher, its texture, its volumetric view."""

    resolution: int = 256
    """Marching-cubes grid (points per axis over the aabb)."""
    level: float = 0.0
    """Density at which the surface is extracted; 0 picks it from the teacher: half the median
    density at the points where its rays reach half their opacity (the surfaces its renders
    show). Measured on lego (hashgrid teacher, vertex colours vs teacher renders): 0.25x the
    median 25.9 dB, 0.5x 27.5 dB, 1x 22.4 dB."""
    min_piece: float = 0.002
    """Connected pieces with fewer than this fraction of all faces are removed (floaters)."""
    max_faces: int = 30000
    """Quadric decimation down to this many faces (0: never). xatlas's unwrapping time grows
    faster than the face count (2 CPU cores: 12 s at 30,000 faces, about 5 minutes at 100,000);
    on lego 100x100, 50,000 faces gave no better held-out PSNR than 30,000."""
    texture_size: int = 1024
    """Texels per side of the base-colour texture (lego 100x100, 30,000 faces: 1024 beat 512 by
    0.7 dB with fixed vertices, and tied with moving ones)."""
    uv_padding: int = 2
    """Texels between charts of the atlas."""
    band: float = 1.0
    """Width of the soft surface band of the volumetric view, in occupancy grid steps."""
    occupancy_resolution: int = 256
    """Cells per axis of the inside/outside grid of the volumetric view."""
    volume_step: int = 256
    """Samples along the aabb diagonal when rays are volume-rendered (``render``)."""
    near: float = 0.01
    """Triangles with a vertex closer than this to the camera are not drawn."""
    antialias: bool = True
    """Blend pixels across silhouette edges (gives vertices gradients at silhouettes)."""
    supersample: int = 4
    """Images are drawn at up to this many times the resolution per axis (at most about 2^21
    pixels drawn) and box-filtered down, as a pixel of a photo averages its footprint. Without
    it a texture finer than the pixels aliases into speckle, and baking fits the speckle.
    Measured on lego 100x100 (hashgrid teacher, 60 s of baking): vs the teacher's renders 24.7 dB
    at 1, 28.8 dB at 2, 30.2 dB at 4."""
    backend: str = "auto"
    """Rasteriser: ``auto`` (nvdiffrast on CUDA when installed, else torch), ``torch`` or ``nvdiffrast``."""
    lr_texture: float = 0.02
    lr_colors: float = 0.02
    lr_vertices: float = 1e-3
    """Learning rate of the vertex positions (times the scene radius); 0 keeps the geometry of
    the extraction and bakes only the colours. Lego 100x100, 2 CPU minutes of baking, held-out
    PSNR: 0 -> 27.75 dB, 5e-4 -> 30.04 dB, 1e-3 -> 30.88 dB, 2e-3 -> 30.29 dB."""

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.occupancy_resolution < 8:
            raise ConfigError("mesh: resolution and occupancy_resolution must be at least 8")
        if self.level < 0:
            raise ConfigError(f"mesh: level is a density (0: automatic), got {self.level}")
        if self.texture_size < 1:
            raise ConfigError(f"mesh: texture_size must be positive, got {self.texture_size}")
        if self.band <= 0:
            raise ConfigError(f"mesh: band must be positive, got {self.band}")
        if self.supersample < 1:
            raise ConfigError(f"mesh: supersample must be at least 1, got {self.supersample}")
        if self.backend not in ("auto", "torch", "nvdiffrast"):
            raise ConfigError(f"mesh: backend must be auto, torch or nvdiffrast, got {self.backend!r}")


SUPERSAMPLED_PIXELS = 1 << 21
"""Most pixels drawn for one supersampled image."""


class MeshField(Representation):
    """A triangle mesh with a base-colour texture (or vertex colours)."""

    kind: ClassVar[str] = "mesh"
    Config: ClassVar[type] = MeshConfig
    learns_from_images: ClassVar[bool] = True
    """As a distillation student it fits whole rendered images (texture baking)."""

    config: MeshConfig

    def __init__(self, config: MeshConfig, aabb: Tensor) -> None:
        super().__init__(config, aabb)
        self.vertices = nn.Parameter(torch.zeros(0, 3))
        self.register_buffer("faces", torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("uvs", torch.zeros(0, 2))
        self.register_buffer("uv_faces", torch.zeros(0, 3, dtype=torch.long))
        self.texture = nn.Parameter(torch.zeros(0, 0, 3))
        self.vertex_colors = nn.Parameter(torch.zeros(0, 3))
        self._volume = None
        self._volume_key: tuple | None = None
        self._edges: tuple[Tensor, Tensor] | None = None
        self._edges_key: tuple | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_arrays(cls, vertices: Tensor, faces: Tensor, uvs: Tensor | None = None, uv_faces: Tensor | None = None,
                    texture: Tensor | None = None, vertex_colors: Tensor | None = None, aabb: Tensor | None = None,
                    config: MeshConfig | None = None) -> "MeshField":
        """A mesh from arrays, checked: vertices [V, 3], faces [F, 3]; a texture [H, W, 3] in
        [0, 1] with uvs [U, 2] (``v`` down) and uv_faces [F, 3]; or vertex colours [V, 3]
        (grey when neither is given). Without ``aabb`` the bounds are the vertices' box plus 5%."""
        vertices = torch.as_tensor(vertices, dtype=torch.float32)
        faces = torch.as_tensor(faces, dtype=torch.long)
        check_geometry(vertices, faces)
        if texture is not None:
            if uvs is None:
                raise ConfigError("mesh: a texture needs UVs")
            uvs = torch.as_tensor(uvs, dtype=torch.float32)
            uv_faces = faces.clone() if uv_faces is None else torch.as_tensor(uv_faces, dtype=torch.long)
            texture = torch.as_tensor(texture, dtype=torch.float32)
            if texture.ndim != 3 or texture.shape[2] != 3 or texture.shape[0] < 1 or texture.shape[1] < 1:
                raise ConfigError(f"mesh: texture must be [H, W, 3], got {list(texture.shape)}")
            if uvs.ndim != 2 or uvs.shape[1] != 2 or uv_faces.shape != faces.shape:
                raise ConfigError(f"mesh: uvs must be [U, 2] and uv_faces [F, 3] like faces, got {list(uvs.shape)} "
                                  f"and {list(uv_faces.shape)}")
            if uv_faces.numel() and (int(uv_faces.min()) < 0 or int(uv_faces.max()) >= uvs.shape[0]):
                raise ConfigError(f"mesh: uv_faces index outside the {uvs.shape[0]} UVs")
            if not bool(torch.isfinite(uvs).all()) or not bool(torch.isfinite(texture).all()):
                raise ConfigError("mesh: UVs or texture hold NaN or infinite values")
            vertex_colors = torch.zeros(0, 3)
        else:
            uvs, uv_faces, texture = torch.zeros(0, 2), torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 0, 3)
            if vertex_colors is None:
                vertex_colors = torch.full((vertices.shape[0], 3), 0.7)
            vertex_colors = torch.as_tensor(vertex_colors, dtype=torch.float32)
            if vertex_colors.shape != vertices.shape:
                raise ConfigError(f"mesh: vertex_colors must be [V, 3] like the vertices, got "
                                  f"{list(vertex_colors.shape)}")
        if aabb is None:
            lo, hi = vertices.amin(0), vertices.amax(0)
            pad = 0.05 * (hi - lo).max().clamp_min(1e-3)
            aabb = torch.stack([lo - pad, hi + pad])
        field = cls(config or MeshConfig(), aabb)
        field._set(vertices, faces, uvs, uv_faces, texture, vertex_colors.clamp(0, 1))
        return field

    def _set(self, vertices: Tensor, faces: Tensor, uvs: Tensor, uv_faces: Tensor, texture: Tensor,
             vertex_colors: Tensor) -> None:
        device = self.aabb.device
        # vertices learn only when lr_vertices > 0 (no gradient work otherwise)
        self.vertices = nn.Parameter(vertices.to(device).contiguous(), requires_grad=self.config.lr_vertices > 0)
        self.faces = faces.to(device).contiguous()
        self.uvs = uvs.to(device).contiguous()
        self.uv_faces = uv_faces.to(device).contiguous()
        self.texture = nn.Parameter(texture.to(device).contiguous())
        self.vertex_colors = nn.Parameter(vertex_colors.to(device).contiguous())
        self._volume = None
        self._edges = None

    def prepare_state(self, state: dict[str, Tensor]) -> None:
        """Resize every tensor to the saved shapes before loading."""
        def like(name: str, default: Tensor) -> Tensor:
            return torch.zeros_like(state[name]) if name in state else default

        self._set(like("vertices", self.vertices.detach()), like("faces", self.faces), like("uvs", self.uvs),
                  like("uv_faces", self.uv_faces), like("texture", self.texture.detach()),
                  like("vertex_colors", self.vertex_colors.detach()))

    @property
    def textured(self) -> bool:
        return self.texture.numel() > 0

    @property
    def scene_radius(self) -> float:
        return 0.5 * float((self.aabb[1] - self.aabb[0]).norm())

    def __repr__(self) -> str:
        colour = f"texture {tuple(self.texture.shape[:2])}" if self.textured else "vertex colours"
        return f"MeshField({self.vertices.shape[0]} vertices, {self.faces.shape[0]} faces, {colour})"

    # ------------------------------------------------------------------ the volumetric view

    def volume(self):
        """Inside grid, distances and nearest-triangle index (rebuilt when the vertices changed)."""
        from radistill.fields.mesh_volume import MeshVolume

        key = (self.vertices._version, self.vertices.data_ptr(), self.vertices.shape[0], self.faces.shape[0])
        if self._volume is None or self._volume_key != key:
            if self.faces.shape[0] == 0:
                raise ConfigError("mesh: the mesh has no faces")
            self._volume = MeshVolume(self.vertices, self.faces, self.aabb, self.config.occupancy_resolution)
            self._volume_key = key
        return self._volume

    def _band(self) -> float:
        return self.config.band * float(((self.aabb[1] - self.aabb[0]) / self.config.occupancy_resolution).max())

    def surface_color(self, triangles: Tensor, bary: Tensor) -> Tensor:
        """Colour of the surface points given by triangles [N] and barycentrics [N, 3].  # [N, 3]"""
        if self.textured:
            uv = (bary[..., None] * self.uvs[self.uv_faces[triangles]]).sum(1)
            return sample_texture(self.texture.clamp(0, 1), uv)
        return (bary[..., None] * self.vertex_colors[self.faces[triangles]]).sum(1).clamp(0, 1)

    def query(self, x: Tensor, d: Tensor) -> FieldOutputs:
        """Density from the signed distance (soft band) and the nearest surface point's colour."""
        from radistill.fields.mesh_volume import soft_density

        band = self._band()
        signed, tri, bary = self.volume().signed_distance(x, 8 * band, 0.5 * band)
        device = x.device
        sigma = soft_density(signed.to(device), band)
        rgb = self.surface_color(tri.to(device), bary.to(device))
        return FieldOutputs(sigma, rgb)

    def density(self, x: Tensor) -> Tensor:
        from radistill.fields.mesh_volume import soft_density

        band = self._band()
        signed, _, _ = self.volume().signed_distance(x, 8 * band, 0.5 * band)
        return soft_density(signed.to(x.device), band)

    bounds_density = True

    density_loss_scale = 0.1
    """Its density is a shell a band thin: at points beside it the log-density errors of a smooth
    student stay large, and under the default weight they drowned the colour loss in the shared
    features. A hash grid learning an open terrain stayed grey (point colour loss on a plateau
    for about 400 steps; 22.1 dB against the mesh in 40 s, 25.7-27.3 dB at a tenth of the weight);
    lego's mesh: 26.3-26.5 dB held-out in 2 minutes either way."""

    def max_density_near(self, x: Tensor, radius: float) -> Tensor:
        """The density at the deepest point within ``radius`` of each point: the signed distance
        grows by at most the distance moved (plus the sheets' half width where the rule for
        open surfaces takes over), and the density with it.  # [N]"""
        from radistill.fields.mesh_volume import soft_density

        band = self._band()
        signed, _, _ = self.volume().signed_distance(x, max(8 * band, radius + band), 0.5 * band)  # exact as far out as query
        return soft_density(signed.to(x.device) + radius + 0.5 * band, band)

    def render(self, rays: Any, background: Tensor | None = None, perturb: bool = False,
               generator: torch.Generator | None = None, window: int | None = None) -> RenderOutputs:
        """Volume rendering of the volumetric view along arbitrary rays (images use ``render_image``)."""
        return render_volumetric(self, rays, self.config.volume_step, background, perturb, generator, window)

    # ------------------------------------------------------------------ rasterisation

    def edges(self) -> tuple[Tensor, Tensor]:
        """``raster.edge_table`` of the faces (kept while the faces stay the same)."""
        key = (self.faces.data_ptr(), self.faces.shape[0])
        if self._edges is None or self._edges_key != key:
            self._edges = edge_table(self.faces)
            self._edges_key = key
        return self._edges

    def render_image(self, cameras: Any, index: int, background: Tensor | None = None,
                     chunk: int = 8192) -> dict[str, Tensor]:
        """Rasterise ``cameras[index]``: ``rgb`` [H, W, 3], ``depth`` and ``opacity`` [H, W]."""
        camera = Camera.from_cameras(cameras, index)
        camera.c2w = camera.c2w.to(self.vertices.device)
        cfg = self.config
        s = max(1, min(cfg.supersample, int(math.sqrt(SUPERSAMPLED_PIXELS / (camera.width * camera.height)))))
        if s > 1:
            camera = Camera(camera.c2w, camera.fx * s, camera.fy * s, camera.cx * s, camera.cy * s, camera.width * s,
                            camera.height * s)
        edges = self.edges()
        if self.textured:
            img = rasterize(self.vertices, self.faces, camera, self.texture.clamp(0, 1), self.uvs, self.uv_faces,
                            None, background, cfg.near, cfg.antialias, cfg.backend, edges)
        else:
            img = rasterize(self.vertices, self.faces, camera, None, None, None, self.vertex_colors.clamp(0, 1),
                            background, cfg.near, cfg.antialias, cfg.backend, edges)
        if s == 1:
            return {"rgb": img.rgb, "depth": img.depth, "opacity": img.opacity}
        out = torch.cat([img.rgb, img.opacity[..., None], img.depth[..., None]], -1).permute(2, 0, 1)[None]
        out = F.avg_pool2d(out, s)[0].permute(1, 2, 0)
        return {"rgb": out[..., :3], "opacity": out[..., 3], "depth": out[..., 4]}

    def param_groups(self) -> list[dict[str, Any]]:
        cfg = self.config
        groups = [{"params": [self.texture], "lr": cfg.lr_texture},
                  {"params": [self.vertex_colors], "lr": cfg.lr_colors}]
        if cfg.lr_vertices > 0:
            groups.append({"params": [self.vertices], "lr": cfg.lr_vertices * self.scene_radius})
        return groups

    # ------------------------------------------------------------------ from a teacher

    @classmethod
    def from_teacher(cls, teacher: Representation, config: MeshConfig | None = None, views: Any = None
                     ) -> "MeshField":
        """Marching cubes on the teacher's density, cleaned, decimated, unwrapped and coloured
        by the teacher (``meshing``); the distill engine then bakes the texture."""
        from radistill.fields import meshing

        from tqdm.auto import tqdm

        config = config or MeshConfig()
        aabb = teacher.aabb.detach().cpu()
        # a bar over the stages in a terminal (a minute on a CPU), silent in logs and tests
        with tqdm(total=6, desc="extracting mesh", unit="stage", disable=None, leave=False) as bar:
            bar.set_postfix_str("surface level")
            level = config.level or meshing.surface_level(teacher, views)
            bar.update()
            bar.set_postfix_str(f"density grid {config.resolution}^3")
            grid = meshing.density_grid(teacher, config.resolution)
            if not config.level:
                level = meshing.level_in_range(grid, level)
            bar.update()
            bar.set_postfix_str("marching cubes")
            vertices, faces = meshing.extract_surface(grid, aabb, level)
            vertices, faces = meshing.drop_small_pieces(vertices, faces, config.min_piece)
            bar.update()
            bar.set_postfix_str(f"decimation of {faces.shape[0]} faces")
            vertices, faces = meshing.decimate(vertices, faces, config.max_faces)
            bar.update()
            bar.set_postfix_str(f"UV atlas of {faces.shape[0]} faces")
            uvs, uv_faces = meshing.uv_atlas(vertices, faces, config.texture_size, config.uv_padding)
            bar.update()
            bar.set_postfix_str("initial texture")
            texture = meshing.initial_texture(teacher, vertices, faces, uvs, uv_faces, config.texture_size)
            bar.update()
        return cls.from_arrays(vertices, faces, uvs, uv_faces, texture, None, aabb, config).to(teacher.aabb.device)


def check_geometry(vertices: Tensor, faces: Tensor) -> None:
    """Clear errors for meshes nothing can be done with: empty, out-of-range indices, NaN."""
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ConfigError(f"mesh: vertices must be [V, 3], got {list(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ConfigError(f"mesh: faces must be triangles [F, 3], got {list(faces.shape)}")
    if faces.shape[0] == 0 or vertices.shape[0] < 3:
        raise ConfigError("mesh: the mesh is empty (no triangles)")
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ConfigError(f"mesh: a face refers to a vertex outside 0..{vertices.shape[0] - 1}")
    if not bool(torch.isfinite(vertices).all()):
        raise ConfigError("mesh: vertices hold NaN or infinite values")
