//! Instructions whose replies by the base model itself become the text-only conversations of
//! phase 2: training on the base's own answers keeps what it does with text (a replay of its
//! behaviour, needing no outside data), while the adapters learn images.
//!
//! Built from templates over topics, in a fixed order. The fixed prompts the docs compare the
//! base and the adapted model on are not among them ([`is_held_out`] checks).

/// Prompts the docs use to compare the base and the adapted model; never trained on.
pub const HELD_OUT_PROMPTS: [&str; 5] = [
    "What is the capital of France?",
    "Name three colors.",
    "What is 12 plus 7?",
    "Write one sentence about the sea.",
    "Translate 'good morning' to French.",
];

const TOPICS: [&str; 24] = [
    "the moon",
    "rain",
    "bicycles",
    "bread",
    "elephants",
    "the ocean tides",
    "volcanoes",
    "libraries",
    "honey bees",
    "chess",
    "winter",
    "trains",
    "coffee",
    "the internet",
    "music",
    "forests",
    "mountains",
    "friendship",
    "gardening",
    "the sun",
    "rivers",
    "computers",
    "birds",
    "cooking pasta",
];

const TEMPLATES: [&str; 6] = [
    "Tell me one interesting fact about {}.",
    "Explain {} to a child in two sentences.",
    "Write a short poem about {}.",
    "What are two good things about {}?",
    "Give me a one-line summary of what {} is.",
    "Write a question someone might ask about {}.",
];

const STANDALONE: [&str; 16] = [
    "Hello! How are you today?",
    "What is 3 times 4?",
    "What is the capital of Italy?",
    "Name three animals that live in the sea.",
    "Give me a synonym for happy.",
    "What day comes after Monday?",
    "How many legs does a spider have?",
    "Spell the word 'house' backwards.",
    "What color is the sky on a clear day?",
    "Write a friendly greeting for a new neighbour.",
    "What is the opposite of cold?",
    "Suggest a name for a pet cat.",
    "What is the largest planet in the solar system?",
    "Translate 'thank you' to Spanish.",
    "List the four seasons.",
    "What is water made of?",
];

/// Whether `prompt` is one of the held-out comparison prompts.
pub fn is_held_out(prompt: &str) -> bool {
    HELD_OUT_PROMPTS.contains(&prompt)
}

/// Every training instruction, in a fixed order (topics x templates, then standalone ones).
pub fn instructions() -> Vec<String> {
    let mut out: Vec<String> = TEMPLATES
        .iter()
        .flat_map(|t| TOPICS.iter().map(move |topic| t.replace("{}", topic)))
        .collect();
    out.extend(STANDALONE.iter().map(|s| s.to_string()));
    out.retain(|p| !is_held_out(p));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_many_distinct_and_never_the_held_out_prompts() {
        let all = instructions();
        assert_eq!(all.len(), 6 * 24 + 16);
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(all.iter().all(|p| !is_held_out(p)));
    }
}
