"""The viser layer of view.py: puts what viewer.core computes on screen and wires the GUI.

Scene tree: ``/gaussians`` (viser's Gaussian-splat node), ``/cameras/{train,test,camera}/
<image name>`` (frustums, blue for training views, orange for test views) with name labels.
With ``<model>/segments/labels.npy``: a "Segments" panel to colour by cluster, hide or show
clusters, isolate one (from the list, or by clicking on it in the scene) and export the
isolated cluster as an Inria PLY (saved under ``<model>/segments/export/`` and offered to the
browser as a download).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import viser

from scene.errors import SceneError
from viewer import core

SPLIT_COLOURS = {"train": (40, 110, 230), "test": (240, 130, 20), "camera": (90, 90, 90)}
NO_ISOLATE = "(all visible)"


class ViewerApp:
    def __init__(
        self,
        server: viser.ViserServer,
        model_dir: str,
        iteration: int | None = None,
        log: Callable[[str], None] = print,
    ):
        self.server = server
        self.model_dir = model_dir
        self.log = log
        self.iteration, ply_path = core.find_point_cloud(model_dir, iteration)
        self.model = core.load_model(ply_path)
        self.splats = core.splats_from_model(self.model)
        self.cameras = core.load_cameras(model_dir)
        try:
            self.labels = core.load_labels(model_dir, len(self.splats))
        except SceneError as exc:
            log(f"warning: {exc}; segments not shown")
            self.labels = None
        self._lock = threading.Lock()
        self.hidden: set[int] = set()
        self.isolated: int | None = None
        self.colour_clusters = False

        framing = core.scene_framing(self.splats, self.cameras)
        server.scene.set_up_direction(tuple(float(x) for x in framing.up))
        server.initial_camera.position = framing.position
        server.initial_camera.look_at = framing.look_at
        server.initial_camera.up = framing.up
        server.initial_camera.fov = framing.fov_y
        self._add_cameras(framing.frustum_scale)
        self._add_info_gui()
        if self.labels is not None:
            self._add_segments_gui()
        self.refresh()
        cams = {s: sum(c.split == s for c in self.cameras) for s in SPLIT_COLOURS}
        log(
            f"{ply_path}: {len(self.splats)} Gaussians, {cams['train']} training and "
            f"{cams['test']} test cameras"
            + (
                f", {len(core.cluster_sizes(self.labels))} segments"
                if self.labels is not None
                else ""
            )
        )

    # ------------------------------------------------------------ scene

    def refresh(self) -> None:
        """Re-send the splats for the current cluster visibility and colouring."""
        with self._lock:
            splats = self.splats
            if self.labels is not None:
                mask = core.visible_mask(self.labels, self.hidden, self.isolated)
                if self.colour_clusters:
                    splats = core.SplatArrays(
                        splats.centers, splats.covariances, core.cluster_colours(self.labels),
                        splats.opacities,
                    )  # fmt: skip
                splats = core.select(splats, mask)
            self.server.scene.add_gaussian_splats(
                "/gaussians",
                centers=splats.centers,
                covariances=splats.covariances,
                rgbs=splats.rgbs,
                opacities=splats.opacities,
            )

    def _add_cameras(self, scale: float) -> None:
        self.frustums: dict[str, list] = {s: [] for s in SPLIT_COLOURS}
        self.camera_labels = []
        for cam in self.cameras:
            name = f"/cameras/{cam.split}/{cam.name}"
            frustum = self.server.scene.add_camera_frustum(
                name,
                fov=cam.fov_y,
                aspect=cam.aspect,
                scale=scale,
                thickness=0.06 * scale,
                color=SPLIT_COLOURS[cam.split],
                wxyz=cam.wxyz,
                position=cam.position,
            )
            label = self.server.scene.add_label(f"{name}/name", cam.name, font_screen_scale=0.7)
            self.frustums[cam.split].append(frustum)
            self.camera_labels.append(label)

            @frustum.on_click
            def _(event, cam=cam) -> None:
                event.client.add_notification(
                    cam.name, f"{cam.split} view, {cam.width}x{cam.height}", auto_close_seconds=4
                )

    # ------------------------------------------------------------ GUI

    def _add_info_gui(self) -> None:
        gui = self.server.gui
        gui.add_markdown(
            f"**{os.path.basename(os.path.abspath(self.model_dir))}**, iteration "
            f"{self.iteration}: {len(self.splats)} Gaussians"
        )
        with gui.add_folder("Cameras"):
            for split, label in (("train", "Training cameras"), ("test", "Test cameras")):
                if not self.frustums[split]:
                    continue
                box = gui.add_checkbox(f"{label} ({len(self.frustums[split])})", True)

                @box.on_update
                def _(event, split=split) -> None:
                    for f in self.frustums[split]:
                        f.visible = event.target.value

            names = gui.add_checkbox("Camera names", True)

            @names.on_update
            def _(event) -> None:
                for label in self.camera_labels:
                    label.visible = event.target.value

    def _add_segments_gui(self) -> None:
        gui = self.server.gui
        sizes = core.cluster_sizes(self.labels)
        n_unlabelled = int((self.labels < 0).sum())
        with gui.add_folder("Segments"):
            colour = gui.add_checkbox("Colour by cluster", False)
            options = [NO_ISOLATE] + [f"cluster {k} ({n})" for k, n in sizes.items()]
            self.isolate_dropdown = gui.add_dropdown("Isolate", options, initial_value=NO_ISOLATE)
            pick = gui.add_checkbox("Click picks a cluster", False)
            export = gui.add_button("Export isolated cluster (PLY)", disabled=True)
            self.status = gui.add_markdown("")
            with gui.add_folder("Show clusters", expand_by_default=False):
                show_all = gui.add_button("Show all")
                hide_all = gui.add_button("Hide all")
                boxes: dict[int, viser.GuiCheckboxHandle] = {}
                for k, n in sizes.items():
                    boxes[k] = gui.add_checkbox(f"cluster {k} ({n})", True)
                if n_unlabelled:
                    boxes[-1] = gui.add_checkbox(f"unlabelled ({n_unlabelled})", True)

        by_option = {opt: k for opt, k in zip(options[1:], sizes)}

        @colour.on_update
        def _(event) -> None:
            self.colour_clusters = event.target.value
            self.refresh()

        @self.isolate_dropdown.on_update
        def _(event) -> None:
            self.isolated = by_option.get(event.target.value)
            export.disabled = self.isolated is None
            self.refresh()

        for k, box in boxes.items():

            @box.on_update
            def _(event, k=k) -> None:
                (self.hidden.discard if event.target.value else self.hidden.add)(k)
                self.refresh()

        def set_all(value: bool) -> None:
            # Set the boxes without their callbacks firing one refresh each.
            self.hidden = set() if value else set(boxes)
            with self.server.atomic():
                for box in boxes.values():
                    box.value = value
            self.refresh()

        show_all.on_click(lambda _: set_all(True))
        hide_all.on_click(lambda _: set_all(False))

        def on_scene_click(event) -> None:
            mask = core.visible_mask(self.labels, self.hidden, None)
            idx = core.pick_gaussian(self.splats, event.ray_origin, event.ray_direction, mask)
            if idx is None or self.labels[idx] < 0:
                self.status.content = "No cluster under the cursor."
                return
            k = int(self.labels[idx])
            self.isolate_dropdown.value = f"cluster {k} ({sizes[k]})"

        @pick.on_update
        def _(event) -> None:
            if event.target.value:
                self.server.scene.on_click()(on_scene_click)
            else:
                self.server.scene.remove_click_callback(on_scene_click)

        @export.on_click
        def _(event) -> None:
            if self.isolated is None:
                return
            name = f"cluster_{self.isolated}_iteration_{self.iteration}.ply"
            path = os.path.join(self.model_dir, "segments", "export", name)
            count = core.export_cluster(self.model, self.labels, self.isolated, path)
            self.status.content = f"Saved {count} Gaussians to `{path}`"
            self.log(f"exported cluster {self.isolated}: {count} Gaussians -> {path}")
            if event.client is not None:
                with open(path, "rb") as f:
                    event.client.send_file_download(name, f.read())


def serve(model_dir: str, iteration: int | None, host: str, port: int) -> viser.ViserServer:
    """Start a viser server on ``host:port`` showing ``model_dir`` (model errors raise
    SceneError before the server starts)."""
    # Read the model first: a bad folder fails before a port is taken.
    iteration, _ = core.find_point_cloud(model_dir, iteration)
    server = viser.ViserServer(host=host, port=port, verbose=False)
    try:
        server.gui.configure_theme(
            control_layout="collapsible", show_logo=False, show_share_button=False
        )
        ViewerApp(server, model_dir, iteration)
    except BaseException:
        server.stop()
        raise
    return server
