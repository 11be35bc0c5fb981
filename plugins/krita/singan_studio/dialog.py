"""The questions an entry asks before each run: Harmonize selection how much colour match, and whether to
refine the model on this object first; Re-style layer which stored model, and which way; Generate from set
which stored model, which seed, and the best of how many seeds; Upscale layer how many times larger, and
how strongly (docs/artists.md).
"""

from __future__ import annotations

from krita import Krita
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
)

from editor_bridge.plugin_core import Ask, Operation
from editor_bridge.plugin_runner import (
    COLOR_MATCH_HELP,
    MAX_EDITOR_SEED,
    REFINE_LABEL,
    SEED_HELP,
    model_label,
)
from editor_bridge.protocol import ModelInfo

SETTING_GROUP, SETTING_KEY = "singan_studio", "color_match"  # in kritarc: the last value used
# What the e2e driver looks for.
DIALOG_NAME, SPIN_NAME, REFINE_NAME = "singan_color_match_dialog", "singan_color_match", "singan_refine"


def _ok_cancel(dialog: QDialog) -> QDialogButtonBox:
    """OK and Cancel, accepting and rejecting `dialog`."""
    buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    return buttons


def last_color_match(default: float) -> float:
    """The value used last time in this Krita, else `default` (the installer's, else the engine's)."""
    try:
        value = float(Krita.instance().readSetting(SETTING_GROUP, SETTING_KEY, ""))
    except ValueError:
        return default
    return value if 0.0 <= value <= 1.0 else default


def ask_harmonize_options(
    parent, title: str, default: float, can_refine: bool = True
) -> tuple[float, bool] | None:
    """(colour match, refine) for this run, the colour match remembered for the next; None if cancelled.
    `can_refine`: offer to refine (the engine fine-tunes this entry's models)."""
    dialog = QDialog(parent)
    dialog.setObjectName(DIALOG_NAME)
    dialog.setWindowTitle(title)
    text = QLabel(COLOR_MATCH_HELP)
    text.setWordWrap(True)
    spin = QDoubleSpinBox()
    spin.setObjectName(SPIN_NAME)
    spin.setRange(0.0, 1.0)
    spin.setSingleStep(0.05)
    spin.setDecimals(2)
    spin.setValue(last_color_match(default))
    form = QFormLayout()
    form.addRow("Colour match:", spin)
    refine = QCheckBox(REFINE_LABEL)
    refine.setObjectName(REFINE_NAME)
    buttons = _ok_cancel(dialog)
    layout = QVBoxLayout(dialog)
    layout.addWidget(text)
    layout.addLayout(form)
    if can_refine:
        layout.addWidget(refine)
    layout.addWidget(buttons)
    try:
        if dialog.exec_() != QDialog.Accepted:
            return None
        value, refined = round(spin.value(), 2), can_refine and refine.isChecked()
    finally:
        dialog.deleteLater()
    Krita.instance().writeSetting(SETTING_GROUP, SETTING_KEY, str(value))
    return value, refined


MODEL_DIALOG_NAME, MODEL_COMBO_NAME = "singan_model_dialog", "singan_model"  # for the e2e driver
CHOICE_PREFIX = "singan_choice_"  # + the choice's name: its combo box
SEED_NAME, RANDOM_SEED_NAME = "singan_seed", "singan_random_seed"
# model id, {choice: option}, seed (None: a random one), {number: value} (the entry's asks)
Picked = tuple[str, dict[str, str], "int | None", dict[str, float]]


def ask_model(parent, op: Operation, models: list[ModelInfo]) -> Picked | None:
    """(model id, {choice: option}, seed, {number: value}) for an entry that runs a stored model the artist
    picks (Re-style layer, Generate from set), the last ones picked first; None if cancelled. The seed is
    asked for an entry that draws new images: a random one unless the artist unticks Random and gives one;
    the entry's numbers (Generate from set's best of) as ask_values asks them, in the same dialog."""
    dialog = QDialog(parent)
    dialog.setObjectName(MODEL_DIALOG_NAME)
    dialog.setWindowTitle(op.label)
    form = QFormLayout()
    model_box = QComboBox()
    model_box.setObjectName(MODEL_COMBO_NAME)
    for model in models:
        model_box.addItem(model_label(model), model.model_id)
    last = Krita.instance().readSetting(SETTING_GROUP, f"{op.action}_model", "")
    model_box.setCurrentIndex(max(0, model_box.findData(last)))
    form.addRow("Model:", model_box)
    boxes = {}
    for choice in op.choices:
        box = QComboBox()
        box.setObjectName(CHOICE_PREFIX + choice.name)
        box.addItems(list(choice.options))
        box.setToolTip(choice.help)
        last = Krita.instance().readSetting(SETTING_GROUP, f"{op.action}_{choice.name}", choice.default)
        box.setCurrentIndex(max(0, box.findText(last)))
        form.addRow(choice.name.replace("_", " ").capitalize() + ":", box)
        help_text = QLabel(choice.help)
        help_text.setWordWrap(True)
        form.addRow("", help_text)
        boxes[choice.name] = box
    seed_box, random_box = QSpinBox(), QCheckBox("Random")
    seed_box.setObjectName(SEED_NAME)
    random_box.setObjectName(RANDOM_SEED_NAME)
    if op.new_layer:
        seed_box.setRange(0, MAX_EDITOR_SEED)
        seed_box.setToolTip(SEED_HELP)
        random_box.setChecked(True)
        seed_box.setEnabled(False)
        random_box.toggled.connect(lambda on: seed_box.setEnabled(not on))
        form.addRow("Seed:", seed_box)
        form.addRow("", random_box)
    numbers = _value_boxes(form, op)
    buttons = _ok_cancel(dialog)
    layout = QVBoxLayout(dialog)
    layout.addLayout(form)
    layout.addWidget(buttons)
    try:
        if dialog.exec_() != QDialog.Accepted:
            return None
        model_id = str(model_box.currentData())
        picked = {name: box.currentText() for name, box in boxes.items()}
        seed = None if not op.new_layer or random_box.isChecked() else seed_box.value()
        values = _values(numbers)
    finally:
        dialog.deleteLater()
    Krita.instance().writeSetting(SETTING_GROUP, f"{op.action}_model", model_id)
    for name, value in picked.items():
        Krita.instance().writeSetting(SETTING_GROUP, f"{op.action}_{name}", value)
    _remember(op, values)
    return model_id, picked, seed, values


VALUES_DIALOG_NAME, VALUE_PREFIX = "singan_values_dialog", "singan_value_"  # + the number's name: its box


def _last_value(op: Operation, ask: Ask) -> float:
    """The value used last time in this Krita, else the engine's default."""
    try:
        value = float(Krita.instance().readSetting(SETTING_GROUP, f"{op.action}_{ask.name}", ""))
    except ValueError:
        return ask.default
    return value if ask.minimum <= value <= ask.maximum else ask.default


def ask_values(parent, op: Operation) -> dict[str, float] | None:
    """The numbers an entry asks for (Upscale layer's factor and strength), each with the engine's help as
    its tooltip and the value used last time first; remembered for the next run. None if cancelled."""
    dialog = QDialog(parent)
    dialog.setObjectName(VALUES_DIALOG_NAME)
    dialog.setWindowTitle(op.label)
    form = QFormLayout()
    boxes = _value_boxes(form, op)
    text = QLabel(op.tooltip)
    text.setWordWrap(True)
    layout = QVBoxLayout(dialog)
    layout.addWidget(text)
    layout.addLayout(form)
    layout.addWidget(_ok_cancel(dialog))
    try:
        if dialog.exec_() != QDialog.Accepted:
            return None
        values = _values(boxes)
    finally:
        dialog.deleteLater()
    _remember(op, values)
    return values


def _value_boxes(form: QFormLayout, op: Operation) -> dict[str, QDoubleSpinBox]:
    """A box for each number the entry asks for, with the engine's help as its tooltip and the value used
    last time first, added to `form`."""
    boxes = {}
    for ask in op.asks:
        box = QDoubleSpinBox()
        box.setObjectName(VALUE_PREFIX + ask.name)
        box.setDecimals(ask.decimals)
        box.setRange(ask.minimum, ask.maximum)
        box.setSingleStep(ask.step)
        box.setValue(_last_value(op, ask))
        box.setToolTip(ask.help)
        form.addRow(ask.label + ":", box)
        boxes[ask.name] = box
    return boxes


def _values(boxes: dict[str, QDoubleSpinBox]) -> dict[str, float]:
    """The boxes' numbers, rounded to what each shows."""
    return {name: round(box.value(), box.decimals()) for name, box in boxes.items()}


def _remember(op: Operation, values: dict[str, float]) -> None:
    """The numbers given, for the next run's dialog."""
    for name, value in values.items():
        Krita.instance().writeSetting(SETTING_GROUP, f"{op.action}_{name}", str(value))
