"""Test driver loaded by the real Krita (tests/test_plugin_krita.py): builds a painting with a pasted object
and a selection, triggers the installed plugin's action as an artist would, and writes what Krita then holds
(layer bytes, composite, layer names, screenshots) to files for the test to judge. Then it quits Krita."""

import faulthandler
import fnmatch
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from krita import Extension, Krita, Selection
from PyQt5.QtCore import QTimer
from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QMessageBox,
    QProgressDialog,
    QPushButton,
    QSpinBox,
)

CONFIG = json.loads(Path(os.environ["SINGAN_DRIVER_CONFIG"]).read_text())
OUT = Path(CONFIG["out"])
# The plugin logs through `logging`; keep its lines beside the driver's results for a failing test's report.
logging.basicConfig(
    filename=str(OUT / "plugin.log"), level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
)
# A crash of Krita's process leaves the Python stacks of the moment here, for a failing test's report.
_FAULTS = open(OUT / "faulthandler.txt", "w")  # noqa: SIM115 - open for the life of the process
faulthandler.enable(_FAULTS)
RESULT: dict = {"events": []}
T0 = time.monotonic()


def log(event: str) -> None:
    RESULT["events"].append([round(time.monotonic() - T0, 2), event])


def bgra_bytes(path: str) -> tuple[bytes, int, int]:
    # ARGB32 in memory on a little-endian machine is B,G,R,A: Krita's own layout for 8-bit RGBA.
    image = QImage(path).convertToFormat(QImage.Format_ARGB32)
    ptr = image.constBits()
    ptr.setsize(image.byteCount())
    return bytes(ptr), image.width(), image.height()


def names(doc) -> list:
    return [n.name() for n in doc.rootNode().childNodes()]


def menu_entries(window, path: list) -> list | None:
    """The object names of the actions in the menu bar's menu at `path` (names or shown texts), or None."""
    actions = window.qwindow().menuBar().actions()
    for name in path:
        wanted = name.lower()
        found = [a for a in actions if wanted in (a.objectName().lower(), a.text().replace("&", "").lower())]
        if not found or found[0].menu() is None:
            return None
        actions = found[0].menu().actions()
    return [a.objectName() for a in actions]


class Driver(Extension):
    def setup(self) -> None:
        notifier = Krita.instance().notifier()
        notifier.setActive(True)
        notifier.windowCreated.connect(lambda: QTimer.singleShot(300, self.scene))

    def createActions(self, window) -> None:  # noqa: N802
        pass

    def scene(self) -> None:
        try:
            app = Krita.instance()
            window = app.activeWindow()
            window.qwindow().resize(900, 640)
            RESULT["menu"] = menu_entries(window, ["tools", "scripts", "SinGAN Studio"])
            doc = app.openDocument(CONFIG["background"])
            window.addView(doc)
            self.doc = doc
            pixels, w, h = bgra_bytes(CONFIG["object"])
            layer = doc.createNode("Pasted object", "paintlayer")
            layer.setPixelData(pixels, 0, 0, w, h)
            doc.rootNode().addChildNode(layer, None)
            doc.setActiveNode(layer)
            mask = Path(CONFIG["mask"]).read_bytes()
            selection = Selection()
            selection.resize(doc.width(), doc.height())
            selection.setPixelData(mask, 0, 0, doc.width(), doc.height())
            doc.setSelection(selection)
            doc.refreshProjection()
            doc.waitForDone()
            self.layer = layer
            self.dump("before")
            self.runs = list(CONFIG["runs"])
            self.next_run()
        except Exception:
            RESULT["error"] = traceback.format_exc()
            self.finish()

    def dump(self, tag: str) -> None:
        doc = self.doc
        w, h = doc.width(), doc.height()
        RESULT[f"{tag}_layers"] = names(doc)
        (OUT / f"{tag}_composite.raw").write_bytes(bytes(doc.pixelData(0, 0, w, h)))
        (OUT / f"{tag}_object.raw").write_bytes(bytes(self.layer.pixelData(0, 0, w, h)))
        QApplication.processEvents()
        Krita.instance().activeWindow().qwindow().grab().save(str(OUT / f"{tag}_krita.png"))

    def next_run(self) -> None:
        for extra in ("paper", "local_mask"):  # the previous run's overlay or local selection goes
            if getattr(self, extra, None) is not None:
                getattr(self, extra).remove()
                self.doc.waitForDone()
                setattr(self, extra, None)
        if not self.runs:
            self.finish()
            return
        self.layer.setVisible(True)  # shown again after a "hidden" run
        self.run = self.runs.pop(0)
        if self.run.get("overlay"):
            self.paper = self.add_paper()
        if self.run.get("hidden"):  # the artist hid the pasted layer
            self.layer.setVisible(False)
        self.layers_before = names(self.doc)
        self.scratch = None
        target = self.layer  # as the artist clicks the pasted layer before each action
        if self.run.get("scratch"):  # the action runs on a layer that the artist deletes meanwhile
            self.scratch = target = self.doc.createNode("Scratch", "paintlayer")
            self.doc.rootNode().addChildNode(self.scratch, None)
        if self.run.get("local_selection"):  # the pasted layer has a local selection...
            self.local_mask = self.add_local_selection()
            if self.run["local_selection"] == "clicked":  # ...which the artist clicked
                target = self.local_mask
        if self.run.get("sixteen_bit"):  # Image > Convert Image Color Space: 16-bit integer (every run after)
            self.doc.setColorSpace("RGBA", "U16", self.doc.colorProfile())
            self.doc.waitForDone()
            log(f"document now {self.doc.colorModel()} {self.doc.colorDepth()}")
        if self.run.get("float"):  # ...to 32-bit float, linear light (every run after)
            self.doc.setColorSpace("RGBA", "F32", "sRGB-elle-V2-g10.icc")
            self.doc.waitForDone()
            log(f"document now {self.doc.colorModel()} {self.doc.colorDepth()} {self.doc.colorProfile()}")
            self.dump(f"{self.run['tag']}_start")
        if "fps" in self.run:  # the artist set the timeline's frame rate (not an undo step)
            self.doc.setFramesPerSecond(self.run["fps"])
        self.doc.setActiveNode(target)
        # Krita applies setActiveNode through its view a little later: trigger once it has.
        self.when_active(target, self.trigger, time.monotonic() + 10)

    def add_paper(self):
        """A paper texture over everything, in Multiply mode: the kind of layer an artist keeps on top."""
        w, h = self.doc.width(), self.doc.height()
        paper = self.doc.createNode("Paper", "paintlayer")
        row = bytearray()
        for x in range(w):
            row += bytes([200 + (x * 7) % 56] * 3 + [255])  # B, G, R, A
        paper.setPixelData(bytes(row) * h, 0, 0, w, h)
        paper.setBlendingMode("multiply")
        self.doc.rootNode().addChildNode(paper, None)
        self.doc.refreshProjection()
        self.doc.waitForDone()
        log(f"Paper on top: {names(self.doc)}")
        return paper

    def add_local_selection(self):
        """A local selection mask on the pasted layer: the right half of the global selection's object
        (the global selection stays as it is; the plugin must take the clicked local one)."""
        w, h = self.doc.width(), self.doc.height()
        mask = bytearray(Path(CONFIG["mask"]).read_bytes())
        columns = [x for x in range(w) if any(mask[y * w + x] for y in range(h))]
        split = (columns[0] + columns[-1]) // 2
        for y in range(h):
            mask[y * w : y * w + split] = bytes(split)
        RESULT[f"{self.run['tag']}_split_x"] = split
        selection = Selection()
        selection.resize(w, h)
        selection.setPixelData(bytes(mask), 0, 0, w, h)
        node = self.doc.createSelectionMask("Local selection")
        node.setSelection(selection)
        self.layer.addChildNode(node, None)
        self.doc.waitForDone()
        log(f"local selection mask on {self.layer.name()}: {[n.name() for n in self.layer.childNodes()]}")
        return node

    def when_active(self, node, then, deadline: float) -> None:
        name = node.name()
        if self.doc.activeNode().name() == name:
            then()
        elif time.monotonic() > deadline:
            active = self.doc.activeNode()
            seen = (active.name(), active.type()) if active is not None else None
            RESULT["error"] = f"{self.run['tag']}: layer {name!r} never became active (active: {seen})"
            self.finish()
        else:
            # Asked while Krita still settles the previous result's layer as active, the switch can be lost
            self.doc.setActiveNode(node)
            QTimer.singleShot(50, lambda: self.when_active(node, then, deadline))

    def trigger(self) -> None:
        log(f"trigger {self.run['action']}")
        self.known_docs = {d.rootNode().uniqueId() for d in Krita.instance().documents()}
        self.started = time.monotonic()
        # Poll first: a message box the plugin opens blocks trigger() in its own event loop.
        QTimer.singleShot(200, self.poll)
        Krita.instance().action(self.run["action"]).trigger()
        # The artist goes on working while the engine does (the result arrives through the event loop).
        if self.scratch is not None:
            self.scratch.remove()
            self.doc.waitForDone()
            log("deleted the Scratch layer")
        if self.run.get("close_doc"):
            # The artist closes the image while the engine works. (Closing it in this very callback, right
            # after the plugin read it, crashes Krita even with no job running: not something a person
            # can do, so the test waits as a person would; not a second, which a loaded machine stretched
            # to the seconds a retrained model can take.)
            QTimer.singleShot(300, self.close_doc)
            return
        if self.run.get("resize"):  # the artist crops the canvas while the engine works
            self.doc.resizeImage(0, 0, self.doc.width() - 10, self.doc.height() - 10)
            self.doc.waitForDone()
        if self.run.get("convert_meanwhile"):  # ...or converts the image to 16 bits (every run after)
            self.doc.setColorSpace("RGBA", "U16", self.doc.colorProfile())
            self.doc.waitForDone()
            log(f"document now {self.doc.colorModel()} {self.doc.colorDepth()}, the engine working")
        if "switch_to" in self.run:
            other = next(n for n in self.doc.rootNode().childNodes() if n.name() == self.run["switch_to"])
            self.doc.setActiveNode(other)

    def answer_color_match(self, dialog) -> None:
        """The colour-match dialog: note what it offers, set the run's value, press OK (or Cancel)."""
        tag = self.run["tag"]
        spin = dialog.findChild(QDoubleSpinBox, "singan_color_match")
        RESULT[f"{tag}_color_match_shown"] = spin.value()
        if not (OUT / "color_match_dialog_krita.png").exists():
            dialog.grab().save(str(OUT / "color_match_dialog_krita.png"))
        if "color_match" in self.run:
            spin.setValue(self.run["color_match"])
        dialog.findChild(QCheckBox, "singan_refine").setChecked(bool(self.run.get("refine")))
        if self.run.get("dialog_cancel"):
            dialog.reject()
            # Nothing may arrive: look again after a while, then go on with the next run.
            QTimer.singleShot(3000, self.after_cancelled_dialog)
            return
        dialog.accept()
        QTimer.singleShot(200, self.poll)

    def answer_model(self, dialog) -> None:
        """A picked model's dialog (Re-style layer, Generate from set): note the models and numbers it
        offers, pick the run's options, give its numbers, press OK."""
        tag = self.run["tag"]
        models = dialog.findChild(QComboBox, "singan_model")
        RESULT[f"{tag}_models_shown"] = [models.itemText(i) for i in range(models.count())]
        for name, value in self.run["pick"].items():
            box = dialog.findChild(QComboBox, "singan_choice_" + name)
            RESULT[f"{tag}_{name}_options"] = [box.itemText(i) for i in range(box.count())]
            box.setCurrentIndex(box.findText(value))
        if "seed" in self.run:  # Generate from set: untick Random, give the seed
            dialog.findChild(QCheckBox, "singan_random_seed").setChecked(False)
            dialog.findChild(QSpinBox, "singan_seed").setValue(self.run["seed"])
        boxes = {b.objectName(): b for b in dialog.findChildren(QDoubleSpinBox)}
        RESULT[f"{tag}_values_shown"] = {k.removeprefix("singan_value_"): b.value() for k, b in boxes.items()}
        for name, value in self.run.get("values", {}).items():  # Generate from set's best of
            boxes["singan_value_" + name].setValue(value)
        dialog.grab().save(str(OUT / f"{tag}_dialog_krita.png"))
        dialog.accept()
        QTimer.singleShot(200, self.poll)

    def answer_values(self, dialog) -> None:
        """Upscale layer's dialog: note the numbers it offers, give the run's, press OK."""
        tag = self.run["tag"]
        boxes = {b.objectName(): b for b in dialog.findChildren(QDoubleSpinBox)}
        RESULT[f"{tag}_values_shown"] = {k.removeprefix("singan_value_"): b.value() for k, b in boxes.items()}
        for name, value in self.run.get("values", {}).items():
            boxes["singan_value_" + name].setValue(value)
        dialog.accept()
        QTimer.singleShot(200, self.poll)

    def new_document(self) -> bool:
        """A run whose result is a new document (Upscale layer): once it is there, note its size, depth,
        layers and pixels, and the painting's layers (untouched), then close it. True: handled."""
        tag = self.run["tag"]
        known = getattr(self, "known_docs", None)
        made = [d for d in Krita.instance().documents() if d.rootNode().uniqueId() not in (known or set())]
        found = [(d, n) for d in made for n in d.rootNode().childNodes() if n.name() == self.run["layer"]]
        if not found:
            self.poll_again(self.started, f"{tag}: no new document after {CONFIG['timeout_s']} s")
            return True
        doc, layer = found[0]
        doc.waitForDone()
        w, h = doc.width(), doc.height()
        RESULT[f"{tag}_document"] = {
            "size": [w, h], "title": doc.name(),
            "space": [doc.colorModel(), doc.colorDepth(), doc.colorProfile()],
            "layers": [n.name() for n in doc.rootNode().childNodes()], "opacity": layer.opacity(),
            "shown": any(v.document() is not None and v.document().rootNode().uniqueId() ==
                         doc.rootNode().uniqueId() for v in Krita.instance().activeWindow().views()),
            "painting_layers": names(self.doc), "seconds": round(time.monotonic() - self.started, 2),
        }  # fmt: skip
        (OUT / f"{tag}_new_document.raw").write_bytes(bytes(layer.pixelData(0, 0, w, h)))
        doc.setModified(False)
        doc.close()
        self.doc.waitForDone()
        QTimer.singleShot(300, self.next_run)
        return True

    def after_cancelled_dialog(self) -> None:
        RESULT[f"{self.run['tag']}_layers"] = names(self.doc)
        self.next_run()

    def poll(self) -> None:
        try:
            dialogs = [
                w
                for w in QApplication.topLevelWidgets()
                if w.objectName() == "singan_color_match_dialog" and w.isVisible()
            ]
            if dialogs:
                self.answer_color_match(dialogs[0])
                return
            pickers = [
                w
                for w in QApplication.topLevelWidgets()
                if w.objectName() == "singan_model_dialog" and w.isVisible()
            ]
            if pickers:
                self.answer_model(pickers[0])
                return
            asked = [
                w
                for w in QApplication.topLevelWidgets()
                if w.objectName() == "singan_values_dialog" and w.isVisible()
            ]
            if asked:
                self.answer_values(asked[0])
                return
            boxes = [
                w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
            ]
            offers = [box for box in boxes if box.button(QMessageBox.Yes) is not None]
            # "The engine is not running. Start it now?": Yes, once; asked again, it failed to start one
            if offers and self.run.get("answer_start") and not RESULT.get("offers"):
                RESULT.setdefault("offers", []).extend(box.text() for box in offers)
                offers[0].button(QMessageBox.Yes).click()  # as the artist clicks Yes
                QTimer.singleShot(200, self.poll)
                return
            if boxes and self.run.get("expect_message"):  # the run is meant to end with a message
                RESULT[f"{self.run['tag']}_messages"] = [box.text() for box in boxes]
                if not self.run.get("close_doc"):
                    RESULT[f"{self.run['tag']}_layers"] = names(self.doc)
                for box in boxes:
                    box.done(0)
                QTimer.singleShot(100, self.next_run)
                return
            if boxes:  # the plugin told the artist something went wrong: record it, close it, stop
                RESULT.setdefault("messages", []).extend(box.text() for box in boxes)
                for box in boxes:
                    box.done(0)
                QTimer.singleShot(100, self.finish)
                return
            preview = f"{self.run.get('layer')} (preview)"
            seen = f"{self.run['tag']}_preview_seen" in RESULT
            if not seen and not self.run.get("close_doc") and preview in names(self.doc):
                RESULT[f"{self.run['tag']}_preview_seen"] = round(time.monotonic() - self.started, 2)
                RESULT[f"{self.run['tag']}_preview_layers"] = names(self.doc)
            if self.run.get("cancel") and self.cancel_job():
                return
            if self.run.get("new_document") and self.new_document():
                return
            if self.run.get("expect_message"):  # only a message can come (the image is closed or resized)
                self.poll_again(self.started, f"{self.run['tag']}: no message after {CONFIG['timeout_s']} s")
                return
            # the layer's name, or a shell-style pattern ("Generated (seed *)": the seed kept is the engine's)
            nodes = self.doc.rootNode().childNodes()
            layer = next((n for n in nodes if fnmatch.fnmatchcase(n.name(), self.run["layer"])), None)
            if layer is None:
                self.poll_again(self.started, f"no layer {self.run['layer']!r} after {CONFIG['timeout_s']} s")
                return
            tag = self.run["tag"]
            if f"{tag}_seconds" not in RESULT:
                # Krita settles the active layer from queued signals: look again a moment later.
                RESULT[f"{tag}_seconds"] = round(time.monotonic() - self.started, 2)
                QTimer.singleShot(300, self.poll)
                return
            self.doc.waitForDone()
            w, h = self.doc.width(), self.doc.height()
            if self.run.get("animated"):
                self.dump_clip(layer)
            (OUT / f"{tag}_new_layer.raw").write_bytes(bytes(layer.pixelData(0, 0, w, h)))
            RESULT[f"{tag}_new_layer_space"] = [layer.colorModel(), layer.colorDepth(), layer.colorProfile()]
            RESULT[f"{tag}_new_layer_above"] = names(self.doc).index(layer.name()) == (
                names(self.doc).index("Pasted object") + 1
            )
            RESULT[f"{tag}_active_is_new"] = self.doc.activeNode().name() == layer.name()
            RESULT[f"{tag}_active"] = self.doc.activeNode().name()
            RESULT[f"{tag}_layer_name"] = layer.name()
            self.dump(tag)
            if self.run.get("keep"):  # the artist keeps the result and goes on
                self.next_run()
                return
            for _ in range(self.run.get("undo", 1)):  # (2: this run's layer and a kept one before it)
                Krita.instance().action("edit_undo").trigger()
                self.doc.waitForDone()
            self.doc.refreshProjection()
            self.doc.waitForDone()
            self.dump(f"{tag}_undone")
            self.next_run()
        except Exception:
            RESULT["error"] = traceback.format_exc()
            self.finish()

    def dump_clip(self, layer) -> None:
        """An animated layer: its keyframes, the timeline's range and rate, and its first and last frames."""
        tag, doc = self.run["tag"], self.doc
        start, end = doc.fullClipRangeStartTime(), doc.fullClipRangeEndTime()
        RESULT[f"{tag}_animated"] = layer.animated()
        RESULT[f"{tag}_document_profile"] = doc.colorProfile()
        RESULT[f"{tag}_clip"] = [start, end, doc.framesPerSecond()]
        RESULT[f"{tag}_keyframes"] = [t for t in range(end + 1) if layer.hasKeyframeAtTime(t)]
        for name, time_ in (("first", start), ("last", end)):  # (moving the timeline would be an undo step)
            pixels = layer.pixelDataAtTime(0, 0, doc.width(), doc.height(), time_)
            (OUT / f"{tag}_{name}.raw").write_bytes(bytes(pixels))

    def poll_again(self, since: float, error: str) -> None:
        """Look again shortly, or, timeout_s after `since`, record `error` with a screenshot and stop."""
        if time.monotonic() - since > CONFIG["timeout_s"]:
            RESULT["error"] = error
            Krita.instance().activeWindow().qwindow().grab().save(str(OUT / "timeout_krita.png"))
            self.finish()
        else:
            QTimer.singleShot(200, self.poll)

    def cancel_job(self) -> bool:
        """Once the progress dialog says the engine trains, press its Cancel; then note what the dialog
        shows and, when it has gone, how long that took and what the document holds. True: handled."""
        tag = self.run["tag"]
        windows = QApplication.topLevelWidgets()
        dialogs = [w for w in windows if isinstance(w, QProgressDialog) and w.isVisible()]
        if f"{tag}_clicked" not in RESULT:
            if not dialogs or "Training" not in dialogs[0].labelText():
                self.poll_again(self.started, f"{tag}: the progress dialog never said Training")
                return True
            if self.run.get("wait_preview") and f"{tag}_preview_seen" not in RESULT:
                self.poll_again(self.started, f"{tag}: no preview layer came")
                return True
            RESULT[f"{tag}_clicked"] = time.monotonic() - self.started
            self.clicked = time.monotonic()
            dialogs[0].findChild(QPushButton).click()  # as the artist presses Cancel
            QApplication.processEvents()
            RESULT[f"{tag}_dialog_after_click"] = [d.labelText() for d in dialogs if d.isVisible()]
            QTimer.singleShot(200, self.poll)
            return True
        if dialogs:
            self.poll_again(self.clicked, f"{tag}: the progress dialog stayed after Cancel")
            return True
        RESULT[f"{tag}_cancel_seconds"] = round(time.monotonic() - self.clicked, 2)
        QTimer.singleShot(1000, self.after_cancelled_job)
        return True

    def after_cancelled_job(self) -> None:
        RESULT[f"{self.run['tag']}_layers"] = names(self.doc)
        self.next_run()

    def close_doc(self) -> None:
        # A person's click is handled from Krita's own event loop, never from a loop nested in a callback:
        # Krita waits for a busy image inside the plugin's addChildNode processing every event but the
        # user's (then under a modal dialog), and a timer firing there closed the image under the call
        # (Krita crashed; reproduced with a busy image). So wait for the callback on the stack to return.
        caller = sys._getframe().f_back
        if caller is not None:
            deferred = RESULT["close_deferred"] = RESULT.get("close_deferred", 0) + 1
            if deferred * 0.1 > CONFIG["timeout_s"]:
                RESULT["error"] = (
                    f"{self.run['tag']}: {caller.f_code.co_name} never returned to let the image close"
                )
                self.finish()
                return
            QTimer.singleShot(100, self.close_doc)
            return
        self.doc.setModified(False)
        self.doc.close()
        RESULT["closed_after_s"] = round(time.monotonic() - self.started, 2)
        log("closed the document")

    def finish(self) -> None:
        log("finish")
        (OUT / "driver.json").write_text(json.dumps(RESULT, indent=1))
        for doc in Krita.instance().documents():
            doc.setModified(False)
            doc.close()
        QTimer.singleShot(200, lambda: Krita.instance().action("file_quit").trigger())


Krita.instance().addExtension(Driver(Krita.instance()))
