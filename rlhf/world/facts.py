"""The built-in, entirely fictional fact table and the small vocabularies every task family draws from.

Everything the instruction world "knows" lives here, so that the gold oracle (oracle.py), the prompt
generators (tasks.py), the pretraining corpus (corpus.py) and the simulated labelers (labelers.py) all
agree. The vocabulary is deliberately small and reused across families, so that a 4-layer, 128-wide
model with a ~1000-token BPE can learn it:

    CAPITALS["Norland"]  == "Vesk"     (invented countries and cities)
    OPPOSITES["hot"]     == "cold"     (ordinary English opposites)
    COLOURS["zibble"]    == "blue"     (invented things and their colours)
    SOUNDS["glorp"]      == "honk"     (invented animals and their sounds)
    SECRET_CODE_WORD     == "marigold" (the one thing the world's rules forbid revealing)

UNKNOWN_* hold names that look like table entries but are *not* in the table: questions about them are
the "honest" prompts, whose gold answer is an admission ("I don't know."). They never appear in the
pretraining corpus. Nothing here refers to real places, people or groups.
"""

# Invented countries -> capital cities.
CAPITALS = {
    "Norland": "Vesk", "Pell": "Tarn", "Ostria": "Mirel", "Quon": "Dasha",
    "Belmar": "Orin", "Zuland": "Kip", "Tevia": "Lume", "Frell": "Sorn",
    "Gandor": "Hale", "Ivel": "Brisk", "Marrow": "Pim", "Coralia": "Sella",
    "Dunmore": "Fenn", "Harth": "Olo", "Lisk": "Varo", "Rumel": "Tessa",
}

# Ordinary opposites (both directions are answerable).
_OPPOSITE_PAIRS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("old", "new"),
    ("day", "night"), ("happy", "sad"), ("open", "closed"), ("light", "dark"), ("wet", "dry"),
    ("early", "late"), ("full", "empty"), ("high", "low"), ("loud", "quiet"), ("hard", "soft"),
]
OPPOSITES = {**{a: b for a, b in _OPPOSITE_PAIRS}, **{b: a for a, b in _OPPOSITE_PAIRS}}

# Invented things -> their colour.
COLOURS = {
    "zibble": "blue", "morp": "green", "flink": "red", "dorb": "yellow", "wuzzle": "purple",
    "plim": "orange", "grob": "pink", "snerk": "grey", "tamble": "white", "quib": "black",
    "lorn": "brown", "vell": "gold",
}

# Invented animals -> the sound they make.
SOUNDS = {
    "glorp": "honk", "snuffet": "squeak", "torvil": "roar", "mibble": "chirp", "wompus": "hum",
    "krell": "buzz", "pandle": "bark", "zorse": "neigh", "fiddock": "hoot", "brumble": "purr",
    "sklee": "hiss", "nubbin": "croak",
}

# Look-alike names the table has no entry for (the honest family asks about these).
UNKNOWN_COUNTRIES = ["Zarnia", "Plov", "Kestria", "Umbel", "Drenn", "Valos", "Yorra", "Wendel",
                     "Skell", "Rudia", "Thorn", "Mosk", "Enva", "Garra"]
UNKNOWN_THINGS = ["blick", "trop", "yazzle", "numb", "gleet", "povvy", "sarn", "wibble", "crumb",
                  "flox", "tunder", "zop"]
UNKNOWN_ANIMALS = ["drub", "quirl", "fennix", "mottle", "skib", "yarrow", "plunk", "hobbin", "grell",
                   "wug", "bramp", "blorf"]

# The fictional rule: this word must never be revealed.
SECRET_CODE_WORD = "marigold"

# People's names (greetings, forbidden "be rude to" requests, corpus stories).
NAMES = ["Tom", "Ana", "Bo", "Mira", "Leo", "Sam", "Ida", "Kai", "Nell", "Otto", "Ruth", "Finn"]

# Plain words for the string-transform families, grouped by length so difficulty can pick them.
WORDS = {
    3: ["cat", "dog", "sun", "red", "cup", "hat", "map", "pen", "box", "egg", "owl", "bee"],
    4: ["moon", "tree", "lamp", "fish", "rain", "star", "bird", "milk", "door", "ship", "frog", "leaf"],
    5: ["stone", "river", "apple", "house", "cloud", "bread", "chair", "light", "grass", "horse"],
    6: ["garden", "planet", "window", "orange", "pencil", "yellow", "basket", "rabbit", "forest"],
    7: ["blanket", "kitchen", "rainbow", "teacher", "morning", "dolphin", "lantern", "picture"],
    8: ["elephant", "mountain", "sandwich", "umbrella", "notebook", "dinosaur", "sunshine"],
}
ALL_WORDS = [w for ws in WORDS.values() for w in ws]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# Every word that can be the answer to some lookup. The oracle uses it to notice a response that
# lists several candidate answers ("Vesk Tarn Mirel") instead of committing to one.
ANSWER_LEXICON = frozenset(
    w.lower() for w in [*CAPITALS.values(), *OPPOSITES.values(), *COLOURS.values(), *SOUNDS.values()]
)
