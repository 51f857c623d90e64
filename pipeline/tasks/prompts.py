"""Every policy-facing prompt text lives here, in our own words, so wording changes happen in one place."""

from __future__ import annotations

# `<image>` marks where the reference image goes in the user turn (verl's multimodal datasets use the same
# placeholder; the processor swaps it for vision tokens).
IMAGE_PLACEHOLDER = "<image>"

POLICY_PROMPTS: dict[str, str] = {
    "chart": (
        "Write a self-contained Python script that uses matplotlib to draw a chart identical to the one in "
        "the image: same chart type, data values, colours, markers, titles, axis labels, ticks, legend and "
        "annotations. Hard-code the data in the script, do not read files and do not call plt.show(). "
        "Answer with the script in one ```python code block."
    ),
    "table": (
        "Transcribe the table in the image as code that reproduces it exactly: every row and column, every "
        "cell's text, numbers and units, and merged cells. Use an HTML <table> (with rowspan/colspan for "
        "merged cells) or, for a table without merged cells, a Markdown pipe table. Answer with the table in "
        "one ```html or ```markdown code block."
    ),
    "svg": (
        "Write SVG code that draws exactly the graphic in the image: the same shapes, positions, sizes, "
        "colours, gradients, strokes and text. Give the root <svg> element a viewBox and width/height. "
        "Answer with the SVG document in one ```svg code block."
    ),
}


# Reflection & revision (pipeline/revision.py): the user turn that follows the policy's previous answer. It
# shows that answer's rendering (an image part) when there is one, says what is wrong, and asks again in the
# first prompt's answer format. One template per kind of feedback; {answer} is the task's answer format.
REVISION_ANSWER: dict[str, str] = {
    "chart": "Answer with the complete corrected script in one ```python code block.",
    "table": "Answer with the complete corrected table in one ```html or ```markdown code block.",
    "svg": "Answer with the complete corrected SVG document in one ```svg code block.",
}
REVISION_FEEDBACK: dict[str, str] = {
    # {items}: one line per discrepancy the critic listed, most severe first
    "discrepancies": ("This image is what your code draws. Compared with the reference image, a critic found "
                      "these differences:\n{items}\nFix them and keep everything that is already right. {answer}"),
    # the critic gave no usable judgement (or the reward has no critic): the rendering alone
    "unjudged": ("This image is what your code draws. Compare it with the reference image and fix every "
                 "difference. {answer}"),
    "render_error": "Your code did not render ({error}): {detail}\nFix the error. {answer}",
    "blank_image": "Your code rendered an empty, single-colour image. Draw the reference image's content. {answer}",
    "no_code": "Your answer contained no code. {answer}",
}
REVISION_PROMPTS: dict[str, dict[str, str]] = {
    task: {kind: text.replace("{answer}", answer) for kind, text in REVISION_FEEDBACK.items()}
    for task, answer in REVISION_ANSWER.items()
}
DISCREPANCY_LINE = "- {category} (severity {severity}/3) at {location}: {description}"
NO_DISCREPANCY_LINE = "- none found"  # a clean answer revised anyway (training, or stop_when_clean off)
