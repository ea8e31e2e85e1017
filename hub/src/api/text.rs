//! What a name shown to people (resident, zone, device, contact) may contain: no
//! control characters (a newline breaks notification texts and log lines), no bidi
//! overrides (they make a name read backwards in a dashboard or a push) and no
//! invisible characters (two names that look alike must be alike).

use super::error::{ApiError, ApiResult};

/// The trimmed name, or a 422 naming the problem.
pub fn display_name(field: &str, name: &str, max_chars: usize) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > max_chars {
        return Err(ApiError::Invalid(format!(
            "{field} must be 1 to {max_chars} characters"
        )));
    }
    if let Some(c) = name.chars().find(|c| refused(*c)) {
        return Err(ApiError::Invalid(format!(
            "{field} must not contain control, bidirectional or invisible characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(name.to_string())
}

/// A text of several lines (care notes, allergies): like [`display_name`], but line
/// breaks are kept (a `\r\n` becomes `\n`) and it may be up to `max_chars` long.
pub fn note(field: &str, text: &str, max_chars: usize) -> ApiResult<String> {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<String> = text
        .trim()
        .split('\n')
        .map(|line| match line.trim() {
            "" => Ok(String::new()),
            l => display_name(field, l, max_chars),
        })
        .collect::<ApiResult<_>>()?;
    let joined = lines.join("\n");
    if joined.is_empty() || joined.chars().count() > max_chars {
        return Err(ApiError::Invalid(format!(
            "{field} must be 1 to {max_chars} characters"
        )));
    }
    Ok(joined)
}

fn refused(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_keep_their_lines_and_refuse_the_rest() {
        assert_eq!(
            note("note", " 耳が遠い\r\n犬がいる ", 100).ok().as_deref(),
            Some("耳が遠い\n犬がいる")
        );
        assert!(note("note", "a\u{202E}b", 100).is_err());
        assert!(note("note", "a\tb", 100).is_err());
        assert!(note("note", " \n ", 100).is_err());
        assert!(note("note", &"x".repeat(101), 100).is_err());
    }

    #[test]
    fn names_refuse_line_breaks_bidi_and_invisible_characters() {
        assert_eq!(
            display_name("name", "  山田 花子 ", 100).ok().as_deref(),
            Some("山田 花子")
        );
        for bad in [
            "a\nb",
            "a\rb",
            "evil\u{202E}txt",
            "a\u{200B}b",
            "a\u{2066}b",
            "\u{FEFF}x",
            "a\u{7}",
        ] {
            assert!(
                display_name("name", bad, 100).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(display_name("name", "", 100).is_err());
    }
}
