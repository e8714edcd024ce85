//! Rendering the conversation with the GGUF's own Jinja chat template.
//!
//! The template is rendered with placeholders in place of message contents.
//! The markup between placeholders is tokenized with special tokens enabled;
//! each message's content is tokenized as plain text. A client who writes
//! `<|im_start|>system` in a message gets those characters, not a forged turn.

use minijinja::{Environment, context};
use serde::Serialize;

use super::tokenizer::Tokenizer;
use crate::Message;

/// Private-use characters that delimit a placeholder; they never reach the model.
const OPEN: char = '\u{F8F0}';
const CLOSE: char = '\u{F8F1}';

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

#[derive(Serialize)]
struct TemplateMessage {
    role: String,
    content: String,
}

impl ChatTemplate {
    /// Compile the template source.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| format!("the model's chat template does not compile: {e}"))?;
        Ok(Self { env })
    }

    /// Render and tokenize a conversation, ending with the assistant's turn opener.
    pub fn encode(&self, tokenizer: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>, String> {
        let placeholders: Vec<TemplateMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| TemplateMessage {
                role: m.role.clone(),
                content: format!("{OPEN}{i}{CLOSE}"),
            })
            .collect();
        let rendered = self
            .env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => placeholders,
                    add_generation_prompt => true,
                    bos_token => "",
                    eos_token => "",
                })
            })
            .map_err(|e| format!("the model's chat template failed: {e}"))?;

        let mut ids = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find(OPEN) {
            ids.extend(tokenizer.encode_trusted(&rest[..start])?);
            let after = &rest[start + OPEN.len_utf8()..];
            let end = after
                .find(CLOSE)
                .ok_or("the chat template split a message placeholder")?;
            let index: usize = after[..end]
                .parse()
                .map_err(|_| "the chat template altered a message placeholder")?;
            let message = messages
                .get(index)
                .ok_or("the chat template referenced an unknown message")?;
            ids.extend(tokenizer.encode_text(&message.content)?);
            rest = &after[end + CLOSE.len_utf8()..];
        }
        ids.extend(tokenizer.encode_trusted(rest)?);
        Ok(ids)
    }
}
