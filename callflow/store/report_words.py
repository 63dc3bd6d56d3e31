"""The report's words, in English and in French (``[daemon] language``; ``--language``).

The report's data (JSON) never changes with the language: only what people read does."""

from __future__ import annotations

from typing import Final

EN: Final[dict[str, str]] = {
    "title": "callflow report {start} to {end} ({tz}){flow}",
    "flow": ", flow {name}",
    "calls": "calls",
    "unfinished": "unfinished (no end recorded)",
    "on_node": "on node {name}",
    "missed": "missed-call rate (abandoned + failed + lost)",
    "without": "without the daemon (fallback, shed, crash)",
    "without_fallback": "dialplan fallback alone (daemon down)",
    "without_shed": "shed (daemon overloaded)",
    "without_crash": "crash: recovered / lost",
    "after_fallback": "after the dialplan fallback",
    "reached_nobody": "reached nobody (nobody, abandoned, cut)",
    "tta_average": "time to answer, average ({n} calls)",
    "tta_p90": "time to answer, p90",
    "rt_average": "response time, staff only, average ({n} calls)",
    "rt_p90": "response time, staff only, p90",
    "cb_requested": "callbacks requested",
    "cb_split": "done / pending / cancelled",
    "cb_rate": "callback completion rate",
    "cb_delay_average": "callback delay, average",
    "cb_delay_p90": "callback delay, p90",
    "forwarded": "forwarded calls",
    "to": "to {destination}",
    "by_tier": "calls by tier",
    "satisfaction": "patient satisfaction",
    "not_collected": "not collected (no survey asked)",
    "satisfaction_average": "patient satisfaction, average rating ({n} ratings)",
    "survey_rate": "survey response rate (ratings / surveys asked)",
    "heatmap": "calls by weekday and hour ({tz})",
    "cell": "{day} {hour:02d}:00-{hour:02d}:59: {n} calls",
    "na": "n/a",
    "definitions": (
        "Definitions: see <code>callflow/store/report.py</code> (missed = abandoned + failed "
        "+ lost over all calls; time to answer = answered - started for answered, forwarded "
        "and emergency calls; response time = ring time before the answer, staff-answered "
        "calls only, no menus; satisfaction = mean survey rating, response rate = ratings / "
        "surveys asked; p90 = nearest rank)."
    ),
}

FR: Final[dict[str, str]] = {
    "title": "callflow : rapport du {start} au {end} ({tz}){flow}",
    "flow": ", parcours {name}",
    "calls": "appels",
    "unfinished": "inachevés (aucune fin enregistrée)",
    "on_node": "sur le nœud {name}",
    "missed": "taux d'appels manqués (abandonnés + échoués + perdus)",
    "without": "sans le démon (repli, délestés, panne)",
    "without_fallback": "repli du plan de numérotation seul (démon arrêté)",
    "without_shed": "délestés (démon surchargé)",
    "without_crash": "panne : repris / perdus",
    "after_fallback": "après le repli du plan de numérotation",
    "reached_nobody": "n'ont joint personne (personne, abandon, coupés)",
    "tta_average": "délai de prise d'appel, moyenne ({n} appels)",
    "tta_p90": "délai de prise d'appel, 90e centile",
    "rt_average": "temps de réponse, équipe seule, moyenne ({n} appels)",
    "rt_p90": "temps de réponse, équipe seule, 90e centile",
    "cb_requested": "rappels demandés",
    "cb_split": "faits / en attente / annulés",
    "cb_rate": "taux de rappels faits",
    "cb_delay_average": "délai de rappel, moyenne",
    "cb_delay_p90": "délai de rappel, 90e centile",
    "forwarded": "appels renvoyés",
    "to": "vers {destination}",
    "by_tier": "appels par niveau d'urgence",
    "satisfaction": "satisfaction des patients",
    "not_collected": "non collectée (aucune enquête proposée)",
    "satisfaction_average": "satisfaction des patients, note moyenne ({n} notes)",
    "survey_rate": "taux de réponse à l'enquête (notes / enquêtes proposées)",
    "heatmap": "appels par jour et par heure ({tz})",
    "cell": "{day} {hour:02d} h 00-{hour:02d} h 59 : {n} appels",
    "na": "n.d.",
    "definitions": (
        "Définitions : voir <code>callflow/store/report.py</code> (manqués = abandonnés + "
        "échoués + perdus sur tous les appels ; délai de prise = décroché - début pour les "
        "appels pris, renvoyés et d'urgence ; temps de réponse = sonnerie avant le décroché, "
        "appels pris par l'équipe seulement, sans les menus ; satisfaction = note moyenne de "
        "l'enquête, taux de réponse = notes / enquêtes proposées ; 90e centile = rang le plus "
        "proche)."
    ),
}

OUTCOMES_FR: Final[dict[str, str]] = {
    "answered": "pris",
    "forwarded": "renvoyés",
    "emergency": "urgences",
    "callback": "rappel demandé",
    "voicemail": "messagerie",
    "hangup": "raccrochés par le parcours",
    "abandoned": "abandonnés",
    "failed": "échoués",
    "shed": "délestés",
    "fallback": "secours du PBX",
    "recovered": "repris après panne",
    "lost": "perdus",
}

FATES_FR: Final[dict[str, str]] = {
    "secretariat": "secrétariat",
    "outside": "secrétariat extérieur",
    "voicemail": "messagerie",
    "nobody": "personne",
    "abandoned": "abandon",
    "cut": "coupés",
    "not_known": "inconnu",
}

WEEKDAYS_FR: Final[dict[str, str]] = {
    "Mon": "lun",
    "Tue": "mar",
    "Wed": "mer",
    "Thu": "jeu",
    "Fri": "ven",
    "Sat": "sam",
    "Sun": "dim",
}


def words(language: str) -> dict[str, str]:
    return FR if language == "fr" else EN


def outcome(name: str, language: str) -> str:
    return OUTCOMES_FR.get(name, name) if language == "fr" else name


def fate_word(name: str, language: str) -> str:
    """Where the dialplan fallback left calls (``FallbackFate``, or ``not_known``)."""
    if language == "fr":
        return FATES_FR.get(name, name)
    return name.replace("_", " ")


def weekday(name: str, language: str) -> str:
    return WEEKDAYS_FR.get(name, name) if language == "fr" else name


__all__ = ["EN", "FR", "fate_word", "outcome", "weekday", "words"]
