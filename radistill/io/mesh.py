"""Mesh files: glTF 2.0 binary (``.glb``) and OBJ + MTL + PNG out; ``.obj``, ``.glb``/``.gltf``
and ``.ply`` meshes in.

Writing is done here, byte by byte, so the layout is exactly what viewers and the PBR work
expect:

* ``.glb``: one mesh, one primitive (positions, normals, ``TEXCOORD_0``, 32-bit indices), a
  metallic-roughness material whose base colour is the baked texture (embedded PNG, linear
  filtering, repeat wrapping), ``metallicFactor`` 0 and ``roughnessFactor`` 1. The texture holds
  the teacher's radiance, lighting included, so the material also carries
  ``KHR_materials_unlit``: viewers that know it show the colours exactly; the others shade it as a
  rough dielectric. Vertex-coloured meshes get ``COLOR_0`` (linear, as glTF defines it).
* ``.obj``: ``v``/``vt``/``f v/vt`` (``vt`` with ``v`` up, OBJ's convention), a ``.mtl`` with
  ``map_Kd`` and the texture as ``.png`` beside it; vertex colours as ``v x y z r g b``.

Reading goes through trimesh (any of its mesh formats); UVs are turned to radistill's ``v``-down
convention, vertices split at UV seams are welded back by position, and a mesh without usable
colour gets grey vertex colours with a warning.

Example:
    >>> save_mesh("lego.glb", field)
    >>> field = load_mesh("lego.glb")
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radistill.errors import ConfigError, DatasetError
from radistill.io.checkpoint import atomic_write_bytes

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".off", ".stl")
"""Files read as meshes (a ``.ply`` only when its header declares faces)."""
GLTF_FLOAT, GLTF_UINT = 5126, 5125
GLTF_ARRAY_BUFFER, GLTF_ELEMENT_ARRAY_BUFFER = 34962, 34963
GLTF_LINEAR, GLTF_REPEAT = 9729, 10497


class MeshFileWarning(UserWarning):
    """A mesh file was read with a documented fallback (no colours, dropped faces, ...)."""


# ---------------------------------------------------------------------------- helpers

def srgb_to_linear(c: Tensor) -> Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: Tensor) -> Tensor:
    c = c.clamp(0, 1)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit normals of the vertices ([0, 0, 1] for unused ones).  # [V, 3]"""
    c = vertices[faces]
    n = torch.linalg.cross(c[:, 1] - c[:, 0], c[:, 2] - c[:, 0])
    out = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), n.repeat_interleave(3, 0))
    norm = out.norm(dim=-1, keepdim=True)
    return torch.where(norm > 1e-12, out / norm.clamp_min(1e-12), torch.tensor([0.0, 0.0, 1.0]))


def png_bytes(texture: Tensor) -> bytes:
    """A [H, W, 3] texture in [0, 1] as 8-bit PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(texture_uint8(texture)).save(buf, format="PNG")
    return buf.getvalue()


def texture_uint8(texture: Tensor) -> np.ndarray:
    return (texture.detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def corner_vertices(field) -> tuple[Tensor, Tensor, Tensor]:
    """Vertices for formats with one index per corner: each distinct (position, UV) pair becomes
    a vertex. Returns the position index [N] and UV index [N] of each such vertex (the UV index
    is -1 without a texture), and the triangles over them [F, 3]."""
    faces = field.faces.detach().cpu()
    if not field.textured:
        return torch.arange(field.vertices.shape[0]), torch.full((field.vertices.shape[0],), -1), faces
    uv_faces = field.uv_faces.detach().cpu()
    key = faces.reshape(-1) * field.uvs.shape[0] + uv_faces.reshape(-1)
    uniq, inverse = torch.unique(key, return_inverse=True)
    return uniq // field.uvs.shape[0], uniq % field.uvs.shape[0], inverse.reshape(-1, 3)


# ---------------------------------------------------------------------------- glTF

def write_glb(path: str | Path, field) -> Path:
    """The mesh as a glTF 2.0 binary (module docstring)."""
    path = Path(path)
    pos_id, uv_id, tris = corner_vertices(field)
    vertices = field.vertices.detach().float().cpu()
    positions = vertices[pos_id]
    normals = vertex_normals(vertices, field.faces.detach().cpu())[pos_id]
    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add_view(data: bytes, target: int | None = None) -> int:
        while len(blob) % 4:
            blob.append(0)
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        blob.extend(data)
        views.append(view)
        return len(views) - 1

    def add_accessor(array: np.ndarray, kind: str, component: int, target: int, bounds: bool = False) -> int:
        acc = {"bufferView": add_view(array.tobytes(), target), "componentType": component,
               "count": int(array.shape[0]), "type": kind}
        if bounds:
            acc["min"] = array.min(0).tolist()
            acc["max"] = array.max(0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    f32 = np.float32
    attributes = {
        "POSITION": add_accessor(positions.numpy().astype(f32), "VEC3", GLTF_FLOAT, GLTF_ARRAY_BUFFER, True),
        "NORMAL": add_accessor(normals.numpy().astype(f32), "VEC3", GLTF_FLOAT, GLTF_ARRAY_BUFFER),
    }
    material: dict = {"name": "baked", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0},
                      "extensions": {"KHR_materials_unlit": {}}}
    doc: dict = {"asset": {"version": "2.0", "generator": "radistill"}, "extensionsUsed": ["KHR_materials_unlit"]}
    if field.textured:
        uvs = field.uvs.detach().float().cpu()[uv_id]
        attributes["TEXCOORD_0"] = add_accessor(uvs.numpy().astype(f32), "VEC2", GLTF_FLOAT, GLTF_ARRAY_BUFFER)
        image_view = add_view(png_bytes(field.texture))
        doc["images"] = [{"bufferView": image_view, "mimeType": "image/png", "name": "base_color"}]
        doc["samplers"] = [{"magFilter": GLTF_LINEAR, "minFilter": GLTF_LINEAR, "wrapS": GLTF_REPEAT,
                            "wrapT": GLTF_REPEAT}]
        doc["textures"] = [{"sampler": 0, "source": 0}]
        material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
    else:
        colors = srgb_to_linear(field.vertex_colors.detach().float().cpu().clamp(0, 1))[pos_id]
        attributes["COLOR_0"] = add_accessor(colors.numpy().astype(f32), "VEC3", GLTF_FLOAT, GLTF_ARRAY_BUFFER)
    indices = add_accessor(tris.reshape(-1).numpy().astype(np.uint32), "SCALAR", GLTF_UINT,
                           GLTF_ELEMENT_ARRAY_BUFFER)
    while len(blob) % 4:
        blob.append(0)
    doc.update({
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "radistill"}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}],
        "materials": [material], "accessors": accessors, "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    })
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    data = (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(text), b"JSON") + text
            + struct.pack("<I4s", len(blob), b"BIN\x00") + bytes(blob))
    atomic_write_bytes(path, data)
    return path


# ---------------------------------------------------------------------------- OBJ

def write_obj(path: str | Path, field) -> Path:
    """The mesh as ``.obj`` with, when textured, a ``.mtl`` and a ``.png`` of the same stem beside it."""
    path = Path(path)
    vertices = field.vertices.detach().float().cpu().numpy()
    faces = field.faces.detach().cpu().numpy() + 1
    lines = ["# radistill mesh"]
    if field.textured:
        mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
        lines.append(f"mtllib {mtl.name}")
        lines.extend(f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in vertices)
        uvs = field.uvs.detach().float().cpu().numpy()
        lines.extend(f"vt {u:.7g} {1.0 - v:.7g}" for u, v in uvs)
        lines.append("usemtl baked")
        uvf = field.uv_faces.detach().cpu().numpy() + 1
        lines.extend(f"f {a}/{ta} {b}/{tb} {c}/{tc}" for (a, b, c), (ta, tb, tc) in zip(faces, uvf))
        atomic_write_bytes(png, png_bytes(field.texture))
        atomic_write_bytes(mtl, (f"newmtl baked\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 0\nmap_Kd {png.name}\n")
                           .encode())
    else:
        colors = field.vertex_colors.detach().float().cpu().clamp(0, 1).numpy()
        lines.extend(f"v {x:.7g} {y:.7g} {z:.7g} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b)
                     in zip(vertices, colors))
        lines.extend(f"f {a} {b} {c}" for a, b, c in faces)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def save_mesh(path: str | Path, field) -> Path:
    """Export a ``mesh`` field as ``.glb`` or ``.obj`` (by the suffix)."""
    path = Path(path)
    if getattr(field, "kind", None) != "mesh":
        raise ConfigError(f"{path}: only a mesh field can be exported as a mesh (got {getattr(field, 'kind', field)})")
    suffix = path.suffix.lower()
    if suffix == ".glb":
        return write_glb(path, field)
    if suffix == ".obj":
        return write_obj(path, field)
    raise ConfigError(f"{path}: meshes are exported as .glb or .obj, not {suffix or 'no suffix'}")


# ---------------------------------------------------------------------------- reading

def ply_has_faces(path: str | Path) -> bool:
    """Whether a PLY file's header declares faces (a mesh rather than a 3DGS point cloud)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    for line in head[: end if end >= 0 else len(head)].decode("latin-1").splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "element" and words[1] == "face":
            return words[2].isdigit() and int(words[2]) > 0
    return False


def is_mesh_file(path: str | Path) -> bool:
    """Whether ``path`` is read as a mesh: by its suffix, and for ``.ply`` by its header."""
    suffix = Path(path).suffix.lower()
    return suffix in MESH_SUFFIXES and (suffix != ".ply" or ply_has_faces(path))


def load_mesh(path: str | Path, config=None):
    """A ``mesh`` field from a mesh file (trimesh reads it; see the module docstring)."""
    from radistill.fields.mesh import MeshField

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such mesh file")
    try:
        import trimesh

        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many kinds for bad files
        raise DatasetError(f"{path}: not a readable mesh: {exc}") from None
    transform = None
    if isinstance(loaded, trimesh.Scene):
        instances = [loaded.graph[node] for node in loaded.graph.nodes_geometry]  # (transform, name)
        instances = [(t, loaded.geometry[name]) for (t, name) in instances
                     if isinstance(loaded.geometry.get(name), trimesh.Trimesh)]
        if not instances:
            raise DatasetError(f"{path}: the file holds no triangle mesh")
        if len(instances) == 1:  # keep the geometry itself: copies lose glTF vertex attributes
            transform, loaded = instances[0]
        else:
            loaded = trimesh.util.concatenate([g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)])
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise DatasetError(f"{path}: the file holds no triangles")
    points = np.asarray(loaded.vertices, dtype=np.float64)
    if transform is not None:
        points = trimesh.transform_points(points, np.asarray(transform, dtype=np.float64))
    vertices = torch.from_numpy(points.astype(np.float32))
    faces = torch.from_numpy(np.asarray(loaded.faces, dtype=np.int64))
    texture, uvs, colors = _colours_of(loaded, path)
    positions, welded = torch.unique(vertices, dim=0, return_inverse=True)
    geo_faces = welded[faces]
    if colors is not None:  # per welded vertex: the first colour given for it
        first = torch.full((positions.shape[0],), -1, dtype=torch.long)
        first.scatter_reduce_(0, welded, torch.arange(welded.numel()), "amin", include_self=False)
        colors = colors[first]
    geo_faces, uv_faces = _drop_degenerate(geo_faces, faces, path)
    try:
        return MeshField.from_arrays(positions, geo_faces, uvs, uv_faces if uvs is not None else None, texture,
                                     colors, None, config)
    except ConfigError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _colours_of(mesh, path: Path) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Texture [H, W, 3] and UVs [V, 2] (``v`` down), or vertex colours [V, 3], or nothing."""
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        uv = None if visual.uv is None else np.asarray(visual.uv, dtype=np.float32)
        if image is not None and uv is not None and uv.shape == (len(mesh.vertices), 2) and np.isfinite(uv).all():
            tex = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
            factor = getattr(material, "baseColorFactor", None)
            if factor is not None:
                tex = tex * torch.as_tensor(np.asarray(factor[:3], dtype=np.float32) / 255.0)
            uvs = torch.from_numpy(uv).clone()
            uvs[:, 1] = 1.0 - uvs[:, 1]
            return tex, uvs, None
        attributes = getattr(visual, "vertex_attributes", None)
        gltf_colors = attributes["color"] if attributes is not None and "color" in attributes else None
        if gltf_colors is not None and len(gltf_colors) == len(mesh.vertices):
            return None, None, _gltf_colors(np.asarray(gltf_colors))
        if image is not None or uv is not None:
            warnings.warn(f"{path}: the texture or its UVs are missing or invalid; using grey vertex colours",
                          MeshFileWarning, stacklevel=3)
            return None, None, None
    colors = getattr(visual, "vertex_colors", None)
    if getattr(visual, "kind", None) == "vertex" and colors is not None and len(colors) == len(mesh.vertices):
        colors = np.asarray(colors)
        if path.suffix.lower() in (".glb", ".gltf"):
            return None, None, _gltf_colors(colors)
        return None, None, torch.from_numpy(colors[:, :3].astype(np.float32) / 255.0)
    warnings.warn(f"{path}: the mesh has no colours; using grey vertex colours", MeshFileWarning, stacklevel=3)
    return None, None, None


def _gltf_colors(colors: np.ndarray) -> Tensor:
    """glTF ``COLOR_0`` values (linear; float, or normalised 8/16-bit integers) as sRGB colours."""
    if np.issubdtype(colors.dtype, np.integer):
        colors = colors.astype(np.float32) / float(np.iinfo(colors.dtype).max)
    return linear_to_srgb(torch.from_numpy(colors[:, :3].astype(np.float32)))


def _drop_degenerate(faces: Tensor, uv_faces: Tensor, path: Path) -> tuple[Tensor, Tensor]:
    """Remove faces that use a vertex twice (after welding), with a warning giving the count."""
    bad = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    if bool(bad.any()):
        warnings.warn(f"{path}: dropped {int(bad.sum())} degenerate faces (a vertex used twice)",
                      MeshFileWarning, stacklevel=3)
    return faces[~bad], uv_faces[~bad]
