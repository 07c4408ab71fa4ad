"""Danbooru tags found in English captions: a longest-match phrase matcher over tipo's tag table.

Captions are lower-cased and split into words (letters, with inner hyphens); a run of one to
four words that spells a Danbooru *general* tag (or one of its aliases) is a match, longer runs
first, left to right, each word used once. A plural the table lacks falls back to its singular
(``giraffes`` -> ``giraffe``). Tags and aliases that are ordinary English in a photo caption
but mean something else on Danbooru are skipped (lists below, chosen by reading the most
frequent matches on COCO captions).

Special tags (``1girl``, ``1boy``, ``2girls``, ...) come from :func:`subject_tags`, a
conservative count of people that only fires when most captions of an image agree.

Example:
    >>> tagger = CaptionTagger.from_table()
    >>> tagger.tags("A man holding an umbrella next to a traffic light on a street.")
    ['holding', 'umbrella', 'traffic light', 'street']
    >>> subject_tags(["A man rides a horse.", "A man on a horse.", "A guy riding a brown horse."])
    ['1boy']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tipo.tags import Category, TagTable, default_table

__all__ = ["STOP_ALIASES", "STOP_TAGS", "CaptionTagger", "subject_tags"]

# Danbooru general tags that are common words in photo captions but not what they mean there
# ("a couple of", "in the back", "on display", "a tall building", "doing a trick").
# fmt: off
STOP_TAGS: frozenset[str] = frozenset({
    "another", "back", "corner", "couple", "cover", "day", "display", "get", "legs", "shown",
    "surrounded", "tall", "trick", "well", "what", "solo", "pov", "outline", "no", "can", "stop", "cross",
    "space", "square", "plain", "ad", "sale", "red fire", "watch", "fly", "swing", "giant", "lap", "catch",
    "pull", "structure", "commercial", "business", "travel", "tan", "animal hands",
})
# Aliases that lead to a different sense (``group`` -> everyone, ``picture`` -> photo (object),
# ``a`` -> a (phrase), ``in bed`` -> under covers, ``man`` -> male focus).
STOP_ALIASES: frozenset[str] = frozenset({
    "a", "bar", "bat", "bats", "cut", "flies", "gear", "group", "hit", "in bed", "male", "man", "men",
    "match", "mouse", "older", "orange", "oranges", "painting", "picture", "pictures", "public", "side",
    "sitting on", "stall", "tile", "track", "wave",
})
# fmt: on

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_PHRASE = re.compile(r"[a-z]+(?:[ -][a-z]+)*")
MAX_WORDS = 4


def _singular(word: str) -> list[str]:
    """Candidate singulars of an English plural, most specific first."""
    out = []
    if len(word) > 4 and word.endswith("ies"):
        out.append(word[:-3] + "y")
    if len(word) > 4 and word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "oes")):
        out.append(word[:-2])
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])
    return out


@dataclass(frozen=True)
class CaptionTagger:
    """Finds Danbooru general tags in captions.

    Attributes:
        phrases: the lower-case spelling a caption may use -> the tag it stands for.
    """

    phrases: dict[str, str]

    @classmethod
    def from_table(cls, table: TagTable | None = None, *, stop_tags: Iterable[str] = STOP_TAGS,
                   stop_aliases: Iterable[str] = STOP_ALIASES) -> CaptionTagger:
        """Build the matcher from a tag table: its general tags plus aliases that lead to them.

        Tags that tipo files elsewhere (``old`` is a quality tag) are left out.
        """
        table = table or default_table()
        stop_t, stop_a = frozenset(stop_tags), frozenset(stop_aliases)
        phrases: dict[str, str] = {}
        for name, category in table.categories.items():
            if (category is Category.GENERAL and name not in stop_t and _PHRASE.fullmatch(name)
                    and table.category(name) is Category.GENERAL):
                phrases[name] = name
        for alias, name in table.aliases.items():
            if alias in phrases or alias in stop_a or name not in phrases or not _PHRASE.fullmatch(alias):
                continue
            phrases[alias] = name
        return cls(phrases)

    def _lookup(self, words: Sequence[str]) -> str | None:
        text = " ".join(words)
        tag = self.phrases.get(text)
        if tag is not None:
            return tag
        *head, last = words
        for single in _singular(last):
            tag = self.phrases.get(" ".join([*head, single]))
            if tag is not None:
                return tag
        return None

    def tags(self, text: str) -> list[str]:
        """The tags in one text, in order of first appearance, each once.

        Example:
            >>> CaptionTagger.from_table().tags("Two giraffes stand in a grassy field by the trees.")
            ['giraffe', 'grassy', 'field', 'tree']
        """
        words = _WORD.findall(text.lower())
        found: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(MAX_WORDS, len(words) - i), 0, -1):
                tag = self._lookup(words[i:i + n])
                if tag is not None:
                    if tag not in found:
                        found.append(tag)
                    i += n
                    break
            else:
                i += 1
        return found

    def tags_of(self, texts: Iterable[str]) -> list[str]:
        """The union of the tags of several texts, in order of first appearance."""
        out: list[str] = []
        for text in texts:
            for tag in self.tags(text):
                if tag not in out:
                    out.append(tag)
        return out


# --- people counts -----------------------------------------------------------------------------

_MALE = {"man", "boy", "guy", "gentleman", "male", "businessman", "policeman", "fisherman", "cowboy"}
_FEMALE = {"woman", "girl", "lady", "female", "businesswoman", "policewoman", "bride"}
# Words that mean more than one person, or a person whose sex the caption does not give.
_MANY = {
    "men", "boys", "guys", "gentlemen", "males", "women", "girls", "ladies", "females", "people", "persons",
    "group", "crowd", "couple", "family", "families", "kids", "children", "players", "team", "teams",
    "friends", "others", "everyone", "spectators", "audience", "fans", "tourists", "riders", "skiers",
    "surfers", "pedestrians", "adults", "students", "workers", "officers", "soldiers", "folks", "they",
    "their", "them", "bridesmaids", "groom", "husband", "wife", "mother", "father", "son", "daughter",
}
_UNSEXED = {
    "person", "child", "kid", "baby", "toddler", "player", "skier", "surfer", "skateboarder",
    "snowboarder", "rider", "someone", "somebody", "adult", "teenager", "teen", "student", "chef",
    "cook", "worker", "officer", "pitcher", "batter", "catcher", "umpire", "athlete", "tourist",
}
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5}


def _people(caption: str) -> tuple[int, int, bool]:
    """(men, women, unclear) counted in one caption; unclear means a group or an unsexed person."""
    words = _WORD.findall(caption.lower())
    men = women = 0
    unclear = False
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        if word in _MALE:
            men = max(men, 1)
        elif word in _FEMALE:
            women = max(women, 1)
        elif word in ("men", "boys", "guys") and before in _NUMBERS:
            men = max(men, _NUMBERS[before])
        elif word in ("women", "girls", "ladies") and before in _NUMBERS:
            women = max(women, _NUMBERS[before])
        elif word in _MANY or word in _UNSEXED:
            unclear = True
    return men, women, unclear


def subject_tags(captions: Sequence[str]) -> list[str]:
    """Subject-count tags (``1girl``, ``1boy``, ``2boys``, ...) when the captions agree.

    A tag is given only when no caption mentions a group or a person of unknown sex, and most
    captions (at least 3 of 5; all of fewer than 3) name the same people. Otherwise: nothing.

    Example:
        >>> subject_tags(["A woman with an umbrella.", "A lady holds an umbrella.", "A woman in the rain."])
        ['1girl']
        >>> subject_tags(["A man and his dog.", "People in a park.", "A man walks a dog."])
        []
    """
    if not captions:
        return []
    counts = [_people(c) for c in captions]
    if any(unclear for _, _, unclear in counts):
        return []
    need = len(captions) if len(captions) < 3 else (len(captions) * 3 + 4) // 5
    named = [(m, w) for m, w, _ in counts if m or w]
    if len(named) < need:
        return []
    # The people most captions name; any caption naming others disagrees.
    common = max(set(named), key=named.count)
    if named.count(common) < need or len(set(named)) > 1:
        return []
    men, women = common
    out = []
    if women:
        out.append("1girl" if women == 1 else f"{women}girls")
    if men:
        out.append("1boy" if men == 1 else f"{men}boys")
    return out
