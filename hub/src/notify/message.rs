//! What a notification says: the facts an outbox row carries ([`Notice`]) and their
//! rendering into a subject, text and HTML in the contact's language.
//!
//! The wording lives in files under `hub/templates/{en,ja}/` (built into the binary),
//! filled by a small logic-less template language: `{{name}}` (HTML-escaped in HTML
//! templates), `{{{name}}}` (never escaped), `{{#name}}…{{/name}}` (only when `name` is
//! not empty) and `{{^name}}…{{/name}}` (only when it is). An unknown name is an error,
//! so a typo in a template fails the unit tests rather than a message at night.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mimamori_protocol::contact::Language;
use mimamori_protocol::{Alert, AlertState};
use serde::{Deserialize, Serialize};

use super::policy::NoticeEvent;
use super::summary::DaySummary;

/// The resident a notice is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidentRef {
    pub id: i64,
    pub name: String,
    pub timezone: String,
}

/// The last known position shown as "where".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
    pub at: DateTime<Utc>,
}

impl Position {
    /// A link any phone opens in a map.
    pub fn map_url(&self) -> String {
        format!(
            "https://www.openstreetmap.org/?mlat={lat:.6}&mlon={lon:.6}#map=17/{lat:.6}/{lon:.6}",
            lat = self.lat,
            lon = self.lon
        )
    }
}

/// Everything a notification says, fixed when it was enqueued, so that a retry sends
/// the same content; stored as the outbox row's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: NoticeEvent,
    pub resident: ResidentRef,
    pub alert: Option<Alert>,
    pub position: Option<Position>,
    pub summary: Option<DaySummary>,
}

/// A rendered message, ready for any channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub map_url: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template uses unknown name {0:?}")]
    Unknown(String),
    #[error("template has an unclosed {0:?}")]
    Unclosed(String),
    #[error("words file: {0}")]
    Words(String),
    #[error("notice has no {0}")]
    Missing(&'static str),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Words {
    subject: HashMap<String, String>,
    headline: HashMap<String, String>,
    kind: HashMap<String, String>,
    severity: HashMap<String, String>,
    state: HashMap<String, String>,
    advice: HashMap<String, String>,
    text: HashMap<String, String>,
    /// The buttons of a LINE message.
    line: HashMap<String, String>,
}

impl Words {
    fn get<'a>(map: &'a HashMap<String, String>, key: &'a str) -> &'a str {
        map.get(key).map(String::as_str).unwrap_or(key)
    }
}

struct LanguagePack {
    words: Words,
    alert_txt: &'static str,
    alert_html: &'static str,
    summary_txt: &'static str,
    summary_html: &'static str,
}

/// The templates of every language, parsed once at start.
pub struct Templates {
    en: LanguagePack,
    ja: LanguagePack,
}

macro_rules! language_files {
    ($lang:literal) => {
        (
            include_str!(concat!("../../templates/", $lang, "/words.toml")),
            include_str!(concat!("../../templates/", $lang, "/alert.txt")),
            include_str!(concat!("../../templates/", $lang, "/alert.html")),
            include_str!(concat!("../../templates/", $lang, "/summary.txt")),
            include_str!(concat!("../../templates/", $lang, "/summary.html")),
        )
    };
}

fn language(
    (words, alert_txt, alert_html, summary_txt, summary_html): (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
) -> Result<LanguagePack, TemplateError> {
    Ok(LanguagePack {
        words: toml::from_str(words).map_err(|e| TemplateError::Words(e.to_string()))?,
        alert_txt,
        alert_html,
        summary_txt,
        summary_html,
    })
}

type Vars = HashMap<&'static str, String>;

impl Templates {
    pub fn load() -> Result<Templates, TemplateError> {
        Ok(Templates {
            en: language(language_files!("en"))?,
            ja: language(language_files!("ja"))?,
        })
    }

    fn of(&self, lang: Language) -> &LanguagePack {
        match lang {
            Language::En => &self.en,
            Language::Ja => &self.ja,
        }
    }

    /// The words of a LINE message's buttons.
    pub fn line_buttons(&self, lang: Language) -> super::line::ButtonWords {
        let w = &self.of(lang).words.line;
        super::line::ButtonWords {
            confirm: Words::get(w, "confirm").to_string(),
            open: Words::get(w, "open").to_string(),
        }
    }

    /// Renders a notice in a language.
    pub fn render(&self, notice: &Notice, lang: Language) -> Result<Message, TemplateError> {
        let l = self.of(lang);
        let tz: Tz = notice
            .resident
            .timezone
            .parse()
            .unwrap_or(chrono_tz::Asia::Tokyo);
        let mut vars = Vars::new();
        vars.insert("resident", notice.resident.name.clone());
        for (k, v) in &l.words.text {
            if let Some(name) = TEXT_NAMES.iter().find(|n| **n == k.as_str()) {
                vars.insert(name, v.clone());
            }
        }
        let (txt, html) = match notice.event {
            NoticeEvent::DailySummary => {
                let s = notice
                    .summary
                    .as_ref()
                    .ok_or(TemplateError::Missing("summary"))?;
                summary_vars(&mut vars, l, s, tz);
                (l.summary_txt, l.summary_html)
            }
            _ => {
                let a = notice
                    .alert
                    .as_ref()
                    .ok_or(TemplateError::Missing("alert"))?;
                alert_vars(&mut vars, l, a, notice, tz)?;
                (l.alert_txt, l.alert_html)
            }
        };
        let event = notice.event.as_str();
        let headline = fill(Words::get(&l.words.headline, event), &vars, false)?;
        vars.insert("headline", headline);
        let subject = fill(Words::get(&l.words.subject, event), &vars, false)?;
        vars.insert("subject", subject.clone());
        Ok(Message {
            subject,
            text: fill(txt, &vars, false)?,
            html: fill(html, &vars, true)?,
            map_url: notice.position.map(|p| p.map_url()),
        })
    }
}

/// The `[text]` entries templates may use by name.
const TEXT_NAMES: [&str; 3] = ["no_position", "no_activity", "no_alerts"];

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

fn alert_vars(
    vars: &mut Vars,
    l: &LanguagePack,
    a: &Alert,
    notice: &Notice,
    tz: Tz,
) -> Result<(), TemplateError> {
    vars.insert(
        "kind",
        Words::get(&l.words.kind, a.kind.as_str()).to_string(),
    );
    vars.insert(
        "severity",
        Words::get(&l.words.severity, a.severity.as_str()).to_string(),
    );
    vars.insert(
        "state",
        Words::get(&l.words.state, a.state.as_str()).to_string(),
    );
    vars.insert(
        "since",
        format!("{} ({})", local(a.opened_at, tz), tz.name()),
    );
    vars.insert("alert_id", a.id.to_string());
    vars.insert(
        "resolution",
        if a.state == AlertState::Resolved {
            a.resolution.clone().unwrap_or_default()
        } else {
            String::new()
        },
    );
    vars.insert(
        "map_url",
        notice.position.map(|p| p.map_url()).unwrap_or_default(),
    );
    vars.insert(
        "position_at",
        notice.position.map(|p| local(p.at, tz)).unwrap_or_default(),
    );
    let advice_key = match notice.event {
        NoticeEvent::Resolved => "resolved",
        _ => a.kind.as_str(),
    };
    let advice = fill(Words::get(&l.words.advice, advice_key), vars, false)?;
    vars.insert("advice", advice);
    Ok(())
}

fn summary_vars(vars: &mut Vars, l: &LanguagePack, s: &DaySummary, tz: Tz) {
    let none = || vars.get("no_activity").cloned().unwrap_or_default();
    let time =
        |t: Option<DateTime<Utc>>| t.map(|t| t.with_timezone(&tz).format("%H:%M").to_string());
    let first = time(s.first_activity).unwrap_or_else(none);
    let last = time(s.last_activity).unwrap_or_else(none);
    let lines: Vec<(String, String)> = s
        .alerts
        .iter()
        .map(|a| {
            let kind = Words::get(&l.words.kind, a.kind.as_str());
            let state = Words::get(&l.words.state, a.state.as_str());
            let outcome = match (&a.resolution, a.state) {
                (Some(r), AlertState::Resolved) => format!("{state}: {r}"),
                _ => state.to_string(),
            };
            let at = a.opened_at.with_timezone(&tz).format("%H:%M").to_string();
            (at, format!("{kind} ({outcome})"))
        })
        .collect();
    let no_alerts = vars.get("no_alerts").cloned().unwrap_or_default();
    let (text_lines, items) = if lines.is_empty() {
        (
            format!("- {no_alerts}"),
            format!("<li>{}</li>", escape(&no_alerts)),
        )
    } else {
        (
            lines
                .iter()
                .map(|(t, w)| format!("- {t} {w}"))
                .collect::<Vec<_>>()
                .join("\n"),
            lines
                .iter()
                .map(|(t, w)| format!("<li>{} {}</li>", escape(t), escape(w)))
                .collect::<String>(),
        )
    };
    vars.insert("date", s.date.format("%Y-%m-%d").to_string());
    vars.insert("first_activity", first);
    vars.insert("last_activity", last);
    vars.insert("hours_active", s.hours_active.to_string());
    vars.insert("outings", s.outings.to_string());
    vars.insert("alert_lines", text_lines);
    vars.insert("alert_items", items);
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn lookup<'a>(vars: &'a Vars, name: &str) -> Result<&'a str, TemplateError> {
    vars.get(name)
        .map(String::as_str)
        .ok_or_else(|| TemplateError::Unknown(name.to_string()))
}

/// Fills a template; see the module documentation for the syntax.
pub fn fill(tpl: &str, vars: &Vars, html: bool) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(tpl.len() + 256);
    let mut rest = tpl;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        if let Some(body) = tag.strip_prefix("{{{") {
            let end = body
                .find("}}}")
                .ok_or_else(|| TemplateError::Unclosed(tag.chars().take(20).collect()))?;
            out.push_str(lookup(vars, body[..end].trim())?);
            rest = &body[end + 3..];
            continue;
        }
        let body = &tag[2..];
        let end = body
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(tag.chars().take(20).collect()))?;
        let name = body[..end].trim();
        rest = &body[end + 2..];
        let section = name.strip_prefix('#').map(|n| (n, false));
        match section.or_else(|| name.strip_prefix('^').map(|n| (n, true))) {
            Some((name, inverted)) => {
                let close = format!("{{{{/{name}}}}}");
                let stop = rest
                    .find(&close)
                    .ok_or_else(|| TemplateError::Unclosed(name.to_string()))?;
                let inner = &rest[..stop];
                rest = &rest[stop + close.len()..];
                if lookup(vars, name)?.is_empty() == inverted {
                    out.push_str(&fill(inner, vars, html)?);
                }
            }
            None => {
                let value = lookup(vars, name)?;
                if html {
                    out.push_str(&escape(value));
                } else {
                    out.push_str(value);
                }
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use mimamori_protocol::{AlertKind, Severity};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn sos_notice(event: NoticeEvent, position: Option<Position>) -> Notice {
        let t = at("2025-11-25T00:30:00Z");
        Notice {
            event,
            resident: ResidentRef {
                id: 3,
                name: "Tanaka <Hanako>".into(),
                timezone: "Asia/Tokyo".into(),
            },
            alert: Some(Alert {
                id: 42,
                resident_id: 3,
                device_id: Some("dev-1".into()),
                kind: AlertKind::Sos,
                severity: Severity::Critical,
                state: AlertState::Open,
                escalated: false,
                opened_at: t,
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                resolution: None,
                details: serde_json::json!({}),
                updated_at: t,
                assigned_to: None,
                snoozed_until: None,
                tier: 0,
            }),
            position,
            summary: None,
        }
    }

    #[test]
    fn fill_handles_sections_escaping_and_unknown_names() {
        let mut v = Vars::new();
        v.insert("a", "<x>".into());
        v.insert("empty", String::new());
        assert_eq!(
            fill("[{{a}}|{{{a}}}]", &v, true),
            Ok("[&lt;x&gt;|<x>]".into())
        );
        assert_eq!(
            fill("{{#a}}yes{{/a}}{{^a}}no{{/a}}", &v, false),
            Ok("yes".into())
        );
        assert_eq!(
            fill("{{#empty}}yes{{/empty}}{{^empty}}no{{/empty}}", &v, false),
            Ok("no".into())
        );
        assert_eq!(
            fill("{{nope}}", &v, false),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert!(matches!(
            fill("{{#a}}open", &v, false),
            Err(TemplateError::Unclosed(_))
        ));
    }

    #[test]
    fn every_template_renders_in_both_languages() -> Result<(), TemplateError> {
        let t = Templates::load()?;
        let pos = Position {
            lat: 35.7074,
            lon: 139.6638,
            at: at("2025-11-25T00:29:00Z"),
        };
        for lang in [Language::Ja, Language::En] {
            for event in [
                NoticeEvent::Opened,
                NoticeEvent::Escalated,
                NoticeEvent::Resolved,
            ] {
                for p in [Some(pos), None] {
                    let m = t.render(&sos_notice(event, p), lang)?;
                    assert!(
                        !m.subject.contains("{{")
                            && !m.text.contains("{{")
                            && !m.html.contains("{{")
                    );
                }
            }
            let summary = Notice {
                event: NoticeEvent::DailySummary,
                alert: None,
                summary: Some(DaySummary {
                    date: NaiveDate::from_ymd_opt(2025, 11, 25).unwrap_or_default(),
                    first_activity: Some(at("2025-11-24T21:40:00Z")),
                    last_activity: None,
                    hours_active: 9,
                    outings: 1,
                    alerts: vec![],
                }),
                ..sos_notice(NoticeEvent::DailySummary, None)
            };
            let m = t.render(&summary, lang)?;
            assert!(
                m.text.contains("06:40"),
                "local time of the first activity: {}",
                m.text
            );
        }
        Ok(())
    }

    #[test]
    fn japanese_sos_says_who_what_where_since_and_what_to_do() -> Result<(), TemplateError> {
        let t = Templates::load()?;
        let pos = Position {
            lat: 35.7074,
            lon: 139.6638,
            at: at("2025-11-25T00:29:00Z"),
        };
        let m = t.render(&sos_notice(NoticeEvent::Opened, Some(pos)), Language::Ja)?;
        assert!(m.subject.contains("緊急") && m.subject.contains("Tanaka <Hanako>さん"));
        assert!(m.text.contains("SOSボタンが押されました"));
        assert!(
            m.text.contains("2025-11-25 09:30 (Asia/Tokyo)"),
            "{}",
            m.text
        );
        assert!(m.text.contains("mlat=35.707400&mlon=139.663800"));
        assert!(m.text.contains("119"));
        assert!(m.html.contains("Tanaka &lt;Hanako&gt;さん"));
        assert!(!m.html.contains("<Hanako>"));
        let en = t.render(&sos_notice(NoticeEvent::Opened, None), Language::En)?;
        assert!(en.text.contains("SOS button pressed") && en.text.contains("no recent position"));
        Ok(())
    }
}
