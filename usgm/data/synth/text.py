"""Random sentences from small embedded word lists (English plus a few other languages).

The text only has to sound like running speech: a tiny phrase grammar (determiner, adjective,
noun, verb, preposition, adverb slots) strings random words into clauses with punctuation, so
eSpeak produces sentence-like prosody, pauses at commas and varied endings.
"""

from __future__ import annotations

import textwrap

import numpy as np


def _parse(block: str) -> dict[str, list[str]]:
    """``"class: w1 w2 …"`` lines (indented continuation lines extend the class) → dict."""
    lexicon: dict[str, list[str]] = {}
    key = ""
    for line in textwrap.dedent(block).strip().splitlines():
        head, sep, rest = line.partition(":")
        if sep and not line[0].isspace() and head.isalpha():
            key = head
            lexicon[key] = rest.split()
        else:
            lexicon[key] += line.split()
    return lexicon


_EN = _parse(
    """
    det: the a this that every some my your our their his her one no each another
    pron: I you we they he she it someone nobody everyone
    noun: time year people way day man woman child world life hand part place case week company
        system program question work government number night point home water room mother area
        money story fact month lot right study book eye job word business issue side kind head
        house service friend father power hour game line end member law car city name team
        minute idea kid body information back parent face level office door health person art
        war history party result change morning reason research girl guy moment air teacher
        force education foot boy age policy music market sense nation plan college interest
        death experience effect class control field development role effort rate heart drug show
        leader light voice wife police mind price report decision son view relationship town
        road river garden window table chair paper letter picture kitchen station island
        mountain forest bridge train coffee bread apple dinner summer winter weather street
        ocean village doctor sister brother machine engine bottle glass stone flower animal
        horse dog bird fish cat song film market ticket corner evening journey answer problem
    verb: took found gave told called asked needed felt became left kept began seemed helped
        showed heard played moved lived believed brought happened wrote provided sat stood lost
        paid met included continued learned changed led understood watched followed stopped
        created spoke read spent grew opened walked won offered remembered loved considered
        appeared bought waited served sent expected built stayed fell cut reached killed
        remained suggested raised passed sold required reported decided pulled carried painted
        cleaned visited noticed answered wanted liked started finished covered chose
    adj: good new first last long great little own other old right big high different small
        large next early young important few public bad same able late hard major better strong
        possible whole free military true federal full special easy clear recent certain
        personal open red difficult available likely short single medical current wrong private
        past foreign fine common poor natural significant similar hot dead central happy serious
        ready simple left physical general environmental financial blue green quiet bright dark
        heavy warm cold sweet gentle busy empty careful strange
    prep: in on at with from into over under after before near behind across through
    adv: again soon today yesterday quickly slowly always never often really almost already
        still together outside tomorrow later perhaps quietly suddenly finally certainly
    conj: and but so because while although when
    """
)

_DE = _parse(
    """
    det: der die das ein eine jeder kein mein dein unser
    pron: ich du wir sie er es man jemand niemand
    noun: Haus Zeit Jahr Mann Frau Kind Welt Leben Hand Tag Stadt Wasser Weg Auge Arbeit Wort
        Mutter Vater Freund Schule Buch Tisch Fenster Garten Abend Morgen Nacht Strasse Zug Wald
        Berg Fluss Brot Kaffee Musik Frage Antwort Geschichte Bruder Schwester Hund Katze Vogel
        Baum Blume Wagen Land Dorf Sommer Winter Regen Brief Bild Stuhl Tür Lied
    verb: sah fand gab sagte kam ging nahm machte hatte brachte hielt stand lag sprach schrieb
        kaufte spielte wohnte lernte fragte wartete öffnete hörte liebte suchte trug baute
    adj: gut neu alt gross klein lang kurz jung schnell langsam schön warm kalt hell dunkel
        leise laut rot blau grün still schwer leicht frei klar wichtig einfach
    prep: in auf mit aus nach vor hinter unter über durch bei
    adv: heute morgen gestern oft immer nie schon noch bald wieder vielleicht leider
    conj: und aber weil während oder denn
    """
)

_ES = _parse(
    """
    det: el la un una este esta cada mi tu nuestro aquel
    pron: yo tú nosotros ellos ella él alguien nadie todos
    noun: casa tiempo año hombre mujer niño mundo vida mano día ciudad agua camino ojo trabajo
        palabra madre padre amigo escuela libro mesa ventana jardín tarde mañana noche calle
        tren bosque montaña río pan café música pregunta respuesta historia hermano hermana
        perro gato pájaro árbol flor coche país pueblo verano invierno lluvia carta puerta
    verb: vio encontró dio dijo vino fue tomó hizo tenía llevó puso habló escribió compró jugó
        vivió aprendió preguntó esperó abrió escuchó quería buscó miró cantó pintó
    adj: bueno nuevo viejo grande pequeño largo corto joven rápido lento bonito caliente frío
        claro oscuro tranquilo rojo azul verde fuerte suave libre importante sencillo
    prep: en con de desde hacia sobre bajo entre tras para por
    adv: hoy ayer mañana siempre nunca ya todavía pronto otra_vez quizás despacio
    conj: y pero porque mientras aunque cuando
    """
)

_FR = _parse(
    """
    det: le la un une ce cette chaque mon ton notre leur
    pron: je tu nous ils elle il on quelqu'un personne
    noun: maison temps année homme femme enfant monde vie main jour ville eau chemin oeil
        travail mot mère père ami école livre table fenêtre jardin soir matin nuit rue train
        forêt montagne rivière pain café musique question réponse histoire frère soeur chien
        chat oiseau arbre fleur voiture pays village été hiver pluie lettre porte chanson
    verb: voyait trouva donna dit vint alla prit fit avait porta parla écrivit acheta joua vécut
        apprit demanda attendit ouvrit écouta voulait chercha regarda chanta
    adj: bon nouveau vieux grand petit long court jeune rapide lent beau chaud froid clair
        sombre calme rouge bleu vert fort doux libre important simple
    prep: dans sur avec de vers sous entre après avant pour par chez
    adv: aujourd'hui hier demain toujours jamais déjà encore bientôt souvent peut-être
    conj: et mais parce_que pendant_que quand ou
    """
)

_IT = _parse(
    """
    det: il la un una questo questa ogni mio tuo nostro quel
    pron: io tu noi loro lei lui qualcuno nessuno tutti
    noun: casa tempo anno uomo donna bambino mondo vita mano giorno città acqua strada occhio
        lavoro parola madre padre amico scuola libro tavolo finestra giardino sera mattina notte
        treno bosco montagna fiume pane caffè musica domanda risposta storia fratello sorella
        cane gatto uccello albero fiore macchina paese villaggio estate inverno
    verb: vide trovò diede disse venne andò prese fece aveva portò parlò scrisse comprò giocò
        visse imparò chiese aspettò aprì ascoltò voleva cercò guardò cantò
    adj: buono nuovo vecchio grande piccolo lungo corto giovane veloce lento bello caldo freddo
        chiaro scuro tranquillo rosso blu verde forte dolce libero importante semplice
    prep: in su con da verso sotto tra dopo prima per
    adv: oggi ieri domani sempre mai già ancora presto spesso forse piano
    conj: e ma perché mentre quando oppure
    """
)

_RU = _parse(
    """
    det: этот эта каждый мой твой наш один
    pron: я ты мы они она он кто-то никто все
    noun: дом время год человек женщина ребёнок мир жизнь рука день город вода дорога глаз
        работа слово мать отец друг школа книга стол окно сад вечер утро ночь улица поезд лес
        гора река хлеб кофе музыка вопрос ответ история брат сестра собака кошка птица дерево
        цветок машина страна деревня лето зима дождь письмо дверь песня
    verb: видел нашёл дал сказал пришёл пошёл взял сделал имел принёс говорил писал купил играл
        жил учил спросил ждал открыл слушал хотел искал смотрел пел
    adj: хороший новый старый большой маленький длинный короткий молодой быстрый медленный
        красивый тёплый холодный светлый тёмный тихий красный синий зелёный сильный простой
    prep: в на с из к под над за перед через
    adv: сегодня вчера завтра всегда никогда уже ещё скоро часто может_быть тихо
    conj: и но потому_что пока когда или
    """
)

WORDS: dict[str, dict[str, list[str]]] = {
    "en": _EN,
    "de": _DE,
    "es": _ES,
    "fr": _FR,
    "it": _IT,
    "ru": _RU,
}
TEXT_LANGUAGES = tuple(WORDS)

# Clause patterns over word classes; "adj?" is optional.
_PATTERNS = (
    ("det", "adj?", "noun", "verb", "det", "noun"),
    ("pron", "verb", "det", "adj?", "noun", "prep", "det", "noun"),
    ("det", "noun", "prep", "det", "noun", "verb", "adv"),
    ("adv", "pron", "verb", "det", "adj", "noun"),
    ("det", "adj", "noun", "verb", "adv"),
    ("pron", "verb", "prep", "det", "noun", "conj", "pron", "verb", "adv"),
    ("det", "noun", "verb", "det", "adj?", "noun", "prep", "det", "noun"),
)


def words_per_second(rate_wpm: float) -> float:
    """Rough spoken words per second of eSpeak at ``rate_wpm`` (its rate counts short words)."""
    return rate_wpm / 60.0 * 0.85


def make_sentence(rng: np.random.Generator, n_words: int, language: str = "en") -> str:
    """A random text of about ``n_words`` words: one or more clauses with punctuation.

    Args:
        rng: random generator.
        n_words: target number of words (at least one clause is produced).
        language: a key of :data:`WORDS`.

    Returns:
        The text, e.g. ``"The quiet river opened a letter, and they waited again."``.
    """
    if language not in WORDS:
        raise ValueError(f"no word list for language {language!r}; have {TEXT_LANGUAGES}")
    lexicon = WORDS[language]
    sentences: list[str] = []
    clause_words: list[str] = []
    total = 0
    while total < max(n_words, 1):
        pattern = _PATTERNS[rng.integers(len(_PATTERNS))]
        for slot in pattern:
            if slot.endswith("?"):
                if rng.random() < 0.5:
                    continue
                slot = slot[:-1]
            options = lexicon[slot]
            clause_words.append(options[rng.integers(len(options))].replace("_", " "))
            total += 1
        # End the sentence or continue it after a comma.
        if total >= n_words or rng.random() < 0.5:
            end = rng.choice([".", ".", ".", "?", "!"])
            text = " ".join(clause_words)
            sentences.append(text[:1].upper() + text[1:] + end)
            clause_words = []
        else:
            clause_words[-1] += ","
    if clause_words:
        text = " ".join(clause_words)
        sentences.append(text[:1].upper() + text[1:] + ".")
    return " ".join(sentences)
