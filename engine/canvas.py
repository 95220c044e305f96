"""Canvas construction: instruction + taxonomy listing + document + masked answer scaffold.

The canvas is assembled from token pieces, never by tokenizing one long string, so the answer
slots hold exactly a code's tokens whatever the document contains, and a document's text can
never merge with the scaffold. The same construction is used to train the demo model.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.taxonomy import CompiledFacet, CompiledTaxonomy
from engine.tokenizer import ModelTokenizer

__all__ = [
    "DOCUMENT_HEADER",
    "Canvas",
    "CanvasTemplate",
    "PromptFormat",
    "build_canvas",
    "build_template",
]

DOCUMENT_HEADER = "\n\nDocument:\n"  # between the taxonomy listing and the document

# Stands in for the document while the chat template is rendered; the rendered text is split
# at it and the document's own tokens go in between.
_DOCUMENT_SLOT = "\x00TACET_DOCUMENT\x00"


@dataclass(frozen=True)
class PromptFormat:
    """How a canvas is worded. Defaults suit instruct models and the demo model alike."""

    instruction: str = (
        "Classify the document below. For each facet, answer with the code of the label that "
        "fits best (facets marked 'any' may fit several)."
    )
    use_chat_template: bool = True  # when the model ships one
    document_token_budget: int = 512  # longer documents are truncated (reported per result)


@dataclass(frozen=True)
class CanvasTemplate:
    """The document-independent parts of a canvas, built once per taxonomy and model."""

    before: tuple[int, ...]  # prompt up to the document
    after: tuple[int, ...]  # prompt after the document, then the scaffold with masked slots
    slot_offsets: dict[str, tuple[int, ...]]  # facet -> slot offsets within `after`
    read_shift: int  # 1 when logits at i predict token i+1 (Dream), else 0
    budget: int


@dataclass(frozen=True)
class Canvas:
    ids: tuple[int, ...]
    slots: dict[str, tuple[int, ...]]  # facet -> absolute positions of its answer slots
    read_shift: int
    truncated: bool

    def read_position(self, slot_position: int) -> int:
        """Where the distribution for `slot_position` is read (Dream's shift-by-one)."""
        return slot_position - self.read_shift


def listing_text(taxonomy: CompiledTaxonomy, *, descriptions: bool = True) -> str:
    """One line per label, `CODE: Name - description` (the description only when wanted)."""
    lines = []
    for facet in taxonomy.facets:
        lines.append(f"Facet {facet.name} (choose {'any' if facet.multi else 'one'}):")
        lines.extend(_label_line(facet, i, descriptions) for i in range(len(facet.label_ids)))
    return "\n".join(lines)


def _label_line(facet: CompiledFacet, i: int, descriptions: bool) -> str:
    description = facet.label_descriptions[i] if descriptions else ""
    suffix = f" - {description}" if description else ""
    return f"{facet.codes[i]}: {facet.label_names[i]}{suffix}"


def build_template(
    taxonomy: CompiledTaxonomy,
    tokenizer: ModelTokenizer,
    *,
    mask_token_id: int,
    read_shift: int,
    prompt: PromptFormat = PromptFormat(),
) -> CanvasTemplate:
    listing = listing_text(taxonomy, descriptions=tokenizer.label_descriptions)
    content = f"{prompt.instruction}\n\n{listing}{DOCUMENT_HEADER}{_DOCUMENT_SLOT}"
    if prompt.use_chat_template and tokenizer.chat_template is not None:
        messages = [{"role": "user", "content": content}]
        rendered = tokenizer.render_chat(messages, add_generation_prompt=True)
    else:
        rendered = content + "\n\nAnswer:\n"
    head, _, tail = rendered.partition(_DOCUMENT_SLOT)
    after = list(tokenizer.encode(tail))
    offsets: dict[str, tuple[int, ...]] = {}
    for facet in taxonomy.facets:
        after += tokenizer.encode(f"{facet.name}:")
        offsets[facet.name] = tuple(range(len(after), len(after) + facet.slots))
        after += [mask_token_id] * facet.slots
        after += tokenizer.encode("\n")
    return CanvasTemplate(
        before=tuple(tokenizer.encode(head)),
        after=tuple(after),
        slot_offsets=offsets,
        read_shift=read_shift,
        budget=prompt.document_token_budget,
    )


def build_canvas(template: CanvasTemplate, document_ids: list[int]) -> Canvas:
    truncated = len(document_ids) > template.budget
    doc = tuple(document_ids[: template.budget])
    start = len(template.before) + len(doc)
    slots = {f: tuple(start + o for o in offs) for f, offs in template.slot_offsets.items()}
    return Canvas(template.before + doc + template.after, slots, template.read_shift, truncated)
