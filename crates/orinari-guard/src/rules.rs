//! Named rules over normalized text: phrasings that are attacks in any
//! context. Each rule's name is the `rule` label of
//! `orinari_guard_blocks_total`. A rule stays here only while it matches no
//! benign prompt of the training and validation splits (`bench/guard/`).

use regex::Regex;

use crate::GuardError;

/// Rule names and patterns (over lower-cased, normalized text).
const RULES: &[(&str, &str)] = &[
    (
        "instruction_override",
        r"\b(ignore|disregard|forget|override|bypass|abandon|drop)\b(\s+\S+){0,3}?\s+(previous|prior|above|earlier|preceding|initial|original|system|safety|existing)\s+(\S+\s+){0,2}?(instructions?|prompts?|rules|directives?|guidelines|constraints|programming|restrictions)\b",
    ),
    // The same in German, French, Spanish and Italian ("ignoriere alle
    // vorherigen Anweisungen", "ignore toutes les instructions
    // précédentes", "ignora las instrucciones anteriores", "ignora le
    // istruzioni precedenti").
    (
        "instruction_override",
        r"\b(ignoriere|ignorier|vergiss|missachte|übergehe)\b(\s+\S+){0,3}?\s+(vorherigen|bisherigen|obigen|vorigen|früheren|ursprünglichen|system)\S*\s+(\S+\s+){0,2}?(anweisungen|instruktionen|befehle|regeln|vorgaben|richtlinien)\b",
    ),
    (
        "instruction_override",
        r"\b(ignore[zs]?|oublie[zs]?|négliger?)\b(\s+\S+){0,3}?\s+(instructions|consignes|règles|directives)\s+(précédentes|antérieures|ci-dessus|initiales|du système|système)\b",
    ),
    (
        "instruction_override",
        r"\b(ignora|ignore|olvida|olvide|descarta)\b(\s+\S+){0,3}?\s+(instrucciones|indicaciones|reglas|directrices|órdenes)\s+(anteriores|previas|de arriba|iniciales|del sistema)\b",
    ),
    (
        "instruction_override",
        r"\b(ignora|dimentica|trascura)\b(\s+\S+){0,3}?\s+(istruzioni|indicazioni|regole|direttive)\s+(precedenti|di sistema|iniziali|sopra)\b",
    ),
    (
        "prompt_leak",
        r"\b(reveal|print|repeat|output|disclose|leak|dump|recite|show me)\b(\s+\S+){0,4}?\s+(your|the)\s+(system|initial|hidden|secret|original)\s+(prompt|instructions|message)\b",
    ),
    (
        "role_hijack",
        r"\b(you are now|from now on,? you are|act as|pretend to be)\s+(dan|an? (unrestricted|unfiltered|uncensored|jailbroken) (ai|assistant|model))\b|\b(do anything now|developer mode enabled|jailbreak mode)\b",
    ),
    (
        "chat_markup",
        r"<\|im_start\|>|<\|im_end\|>|<\|start_header_id\|>|<\|eot_id\|>|<<sys>>|\[/?inst\]|<\|system\|>",
    ),
];

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Rules {
    compiled: Vec<(&'static str, Regex)>,
}

impl Rules {
    /// Compile every rule.
    pub fn new() -> Result<Self, GuardError> {
        let compiled = RULES
            .iter()
            .map(|&(name, pattern)| {
                Regex::new(pattern)
                    .map(|re| (name, re))
                    .map_err(|e| GuardError::Rule(format!("{name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { compiled })
    }

    /// The first rule that matches the normalized text.
    pub fn first_match(&self, normalized: &str) -> Option<&'static str> {
        self.compiled
            .iter()
            .find(|(_, re)| re.is_match(normalized))
            .map(|&(name, _)| name)
    }

    /// Every rule name (metric labels), once each.
    pub fn names() -> impl Iterator<Item = &'static str> {
        RULES
            .iter()
            .enumerate()
            .filter(|&(i, &(name, _))| !RULES[..i].iter().any(|&(n, _)| n == name))
            .map(|(_, &(name, _))| name)
    }
}
