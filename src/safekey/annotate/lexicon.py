"""Word lists for the heuristic labeller: how traces restate a request, how they turn to their own
analysis, and how a key sentence voices a safety concern.

Why lists rather than a model: they are auditable, fast (1,000 traces in seconds), and their
mistakes are visible in the dev-set report; the `llm` labeller exists for what they miss.
"""

from __future__ import annotations

import re

# A sentence that opens with one of these is the model's own move (evaluation, plan, recall,
# solving): it ends the understanding span U. Checked after stripping a leading "Okay,"/"So,".
TURN_OPENERS = re.compile(
    r"^(hmm+|wait|hold on|oh|ah|alright|well|but|however|now|first(ly)?|next|then|also|additionally|"
    r"according|looking at|based on|under|in this case|given|since|because|to (answer|respond|address)|"
    r"let me (think|break|consider|check|see|analy[sz]e|figure|go|recall|start by (recall|think|consider|check))|"
    r"let's|i (need|should|must|have|will|can|could|think|remember|recall|know|believe|wonder|guess|want|'ll|'m not|am not)\b|"
    r"i'(ll|d|ve)\b|my (first|main|response|goal|job|task|role)|"
    r"(that|this|it)('s| is| was| sounds| seems| could| would| might| feels| looks| definitely| clearly| raises)\b|"
    r"(the|our|my) (safety |relevant |main )?(polic|guideline|rule)|safety polic|"
    r"(this|that) (request|question|query|prompt|statement|topic)|what a|yikes|wow|uh)",
    re.I,
)

# "Let me read it again" / "Let me start by understanding the query": still understanding.
READING_META = re.compile(
    r"^(let me|i('ll| will| should| need to)) (re-?read|read|"
    r"(start by )?understand(ing)? (what|the (user|query|request|question|prompt|message))|"
    r"make sure i understand|parse (the|their|what))",
    re.I,
)

# A sentence that opens by describing the user or the request restates/interprets it (U).
RESTATE_OPENERS = re.compile(
    r"^(the user('s)?|they('re| are| were| want| need| ask| also| mention| say| said| seem| provide| describe|"
    r" specifically| then| have| 've| claim| believe| think| feel| wrote| gave)?|he|she|the (request|question|query|"
    r"prompt|message|statement|scenario|story|poem|girl|boy|person|idea|text)|in (the|their) (message|query|request)|"
    r"specifically, (the user|they)|so,? (the user|they) (is|are|want|ask))\b",
    re.I,
)

# Evaluative words: a restating-looking sentence carrying one of these is a judgement, not U,
# unless it mostly repeats the question's own words.
EVALUATIVE = re.compile(
    r"\b(serious|sensitive|tricky|troubl\w*|alarm\w*|red flag|danger\w*|harm\w*|"
    r"illegal|unlawful|unethical|inappropriate|problematic|offensive|hateful|shady|risk\w*|"
    r"violat\w*|polic(y|ies)|guideline\w*|refuse|clearly|definitely|obviously)\b",
    re.I,
)

# K voices a safety concern or invokes the safety policy ("safety aha").
SAFETY_CONCERN = re.compile(
    r"\b(concern\w*|worr\w*|serious|sensitive|tricky|troubl\w*|alarm\w*|red flags?|danger\w*|"
    r"harm\w*|hurt\w*|illegal\w*|unlawful|illicit|crim\w*|unethical|immoral|inappropriate|problematic|"
    r"offensive|hateful|hate|discriminat\w*|derogatory|shady|risk\w*|violat\w*|infring\w*|"
    r"abus\w*|exploit\w*|explicit|self-harm|suicid\w*|distress\w*|disturbing|delicate|heavy|"
    r"no-no|not (ok|okay|appropriate|allowed)|can(no|')t (help|assist|comply|provide)|refus\w*|"
    r"careful\w*|cautio\w*|safe(ty|ly)?|polic(y|ies)|guidelines?|rules|ethic\w*|privacy|"
    r"copyright\w*|misinformation|disinformation|conspirac\w*|defam\w*|malicious|weapon\w*|violen\w*|"
    r"fraud\w*|scam\w*|hack\w*|steal\w*|theft|unauthori[sz]ed|consent\w*|minors?|slurs?|stereotyp\w*|"
    r"burglar\w*|kidnap\w*|murder\w*|kill\w*|terror\w*|bomb\w*|traffick\w*|poison\w*|stalk\w*|harass\w*|"
    r"blackmail\w*|extort\w*|pira(cy|te\w*)|plagiar\w*|dox\w*|porn\w*|racis\w*|sexis\w*|"
    r"misconception\w*|false|fake|sketchy|yikes|whoa)\b",
    re.I,
)

_STOP = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "so", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had", "i", "me", "my", "you", "your", "he", "she", "it", "its", "they", "them", "their", "we", "our", "us", "this", "that", "these", "those", "there", "here", "what", "which", "who", "whom", "how", "why", "when", "where", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "not", "no", "about", "into", "than", "then", "too", "very", "just", "also", "some", "any", "all", "more", "most", "such", "only", "own", "same", "other", "okay", "ok", "user", "users", "asking", "asks", "asked", "ask", "want", "wants", "wanted", "wanting", "know", "like", "get", "make", "way", "ways", "help", "question", "request", "query", "something", "someone", "thing", "things", "tell", "said", "says", "say"]
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def content_words(text: str) -> set[str]:
    """Lowercased content-word stems (crude suffix stripping is enough to match restatements)."""
    out = set()
    for w in _WORD.findall(text.lower()):
        w = w.split("'")[0]
        if w in _STOP or len(w) < 3:
            continue
        for suf in ("ing", "ed", "es", "s", "ly"):
            if len(w) > len(suf) + 3 and w.endswith(suf):
                w = w[: -len(suf)]
                break
        out.add(w)
    return out


def strip_discourse(sentence: str) -> str:
    """Drop leading fillers ("Okay, so", "So,", "Alright,") before matching openers."""
    return re.sub(r"^\W*((okay|ok|so|alright|right|well|now)\b[,\s]*)+", "", sentence, flags=re.I).lstrip()


def is_safety(text: str) -> bool:
    return SAFETY_CONCERN.search(text) is not None
