//! The built-in website's content: a small personal site generated from a
//! seed, so that no two proxies serve the same pages.
//!
//! The seed is derived from the proxy's secret (one-way), so a proxy serves
//! the same site across restarts and upgrades of nothing but this file,
//! while two proxies differ in title, author, posts, wording, dates, layout,
//! colours and page set. Every page is rendered once, at start; serving is a
//! lookup.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// One page: its path, type and bytes, with the validators a web server
/// sends for a static file.
#[derive(Debug, Clone)]
pub struct Page {
    /// The URL path, starting with `/`.
    pub path: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes served.
    pub body: Vec<u8>,
    /// Modification time (Unix seconds), for `Last-Modified` and `ETag`.
    pub modified: u64,
}

impl Page {
    /// The `ETag` nginx would give this file: hex mtime, hex length.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.modified, self.body.len())
    }
}

/// The whole site.
#[derive(Debug, Clone)]
pub struct Site {
    pages: Vec<Page>,
}

const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Kira",
    "Lukas", "Maya", "Nils", "Olga", "Pavel", "Rosa", "Simon", "Tara", "Viktor", "Wen", "Yusuf",
    "Zoe", "Marek", "Leila", "Tomas", "Amira", "Oskar", "Noor", "Ivo",
];
const LAST: &[&str] = &[
    "Novak",
    "Berg",
    "Moreau",
    "Rossi",
    "Keller",
    "Lindqvist",
    "Costa",
    "Horvat",
    "Meyer",
    "Dubois",
    "Sato",
    "Kowalski",
    "Brandt",
    "Oliveira",
    "Jensen",
    "Varga",
    "Fischer",
    "Laine",
    "Petrov",
    "Almeida",
    "Hansen",
    "Marin",
    "Weber",
    "Nagy",
];

/// A topic: what the posts are about.
struct Topic {
    name: &'static str,
    nouns: &'static [&'static str],
    verbs: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        name: "garden",
        nouns: &[
            "tomatoes",
            "compost",
            "the raised bed",
            "seedlings",
            "the apple tree",
            "mulch",
            "beans",
            "the greenhouse",
            "snails",
            "herbs",
            "the watering can",
            "soil",
        ],
        verbs: &[
            "planted",
            "moved",
            "pruned",
            "watered",
            "harvested",
            "covered",
        ],
    },
    Topic {
        name: "cycling",
        nouns: &[
            "the old frame",
            "a new chain",
            "the hill road",
            "brake pads",
            "the commute",
            "tyres",
            "the gravel loop",
            "panniers",
            "the headwind",
            "a spare tube",
        ],
        verbs: &["rode", "fixed", "replaced", "cleaned", "tried", "adjusted"],
    },
    Topic {
        name: "kitchen",
        nouns: &[
            "sourdough",
            "the starter",
            "lentil soup",
            "a cast iron pan",
            "dumplings",
            "the spice shelf",
            "pickles",
            "fresh pasta",
            "the oven",
            "flatbread",
        ],
        verbs: &["baked", "tested", "simmered", "burnt", "improved", "shared"],
    },
    Topic {
        name: "photos",
        nouns: &[
            "the old lens",
            "film rolls",
            "the harbour",
            "morning light",
            "a tripod",
            "street corners",
            "the darkroom",
            "contact sheets",
            "the river",
            "fog",
        ],
        verbs: &["shot", "developed", "scanned", "printed", "framed", "lost"],
    },
    Topic {
        name: "walks",
        nouns: &[
            "the ridge path",
            "a map",
            "wet boots",
            "the forest track",
            "the lake",
            "blisters",
            "the old bridge",
            "a thermos",
            "the valley",
            "trail markers",
        ],
        verbs: &[
            "walked", "followed", "missed", "crossed", "found", "climbed",
        ],
    },
    Topic {
        name: "workshop",
        nouns: &[
            "a chair",
            "the workbench",
            "oak offcuts",
            "a hand plane",
            "dovetails",
            "linseed oil",
            "the lathe",
            "a shelf",
            "sandpaper",
            "the vice",
        ],
        verbs: &[
            "built",
            "sharpened",
            "glued",
            "sanded",
            "finished",
            "measured",
        ],
    },
    Topic {
        name: "reading",
        nouns: &[
            "a long novel",
            "the library",
            "short stories",
            "an old atlas",
            "poetry",
            "the second-hand shop",
            "margin notes",
            "a biography",
            "the reading list",
        ],
        verbs: &[
            "read",
            "borrowed",
            "finished",
            "abandoned",
            "reread",
            "recommended",
        ],
    },
];

const ADJECTIVES: &[&str] = &[
    "quiet",
    "slow",
    "small",
    "second",
    "late",
    "early",
    "long",
    "simple",
    "rainy",
    "cold",
    "warm",
    "short",
    "odd",
    "good",
    "patient",
    "unplanned",
    "stubborn",
    "lucky",
];
const WHEN: &[&str] = &[
    "last weekend",
    "this morning",
    "over the holidays",
    "after work",
    "on Sunday",
    "a few weeks ago",
    "in the spring",
    "before the rain",
    "all afternoon",
    "yesterday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const FONTS: &[&str] = &[
    "Georgia, serif",
    "system-ui, sans-serif",
    "Helvetica, Arial, sans-serif",
    "'Palatino Linotype', Palatino, serif",
    "Verdana, sans-serif",
    "'Trebuchet MS', sans-serif",
    "Charter, 'Bitstream Charter', serif",
];

fn pick<'a>(rng: &mut ChaCha20Rng, from: &'a [&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or("")
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn sentence(rng: &mut ChaCha20Rng, topic: &Topic) -> String {
    let (n1, n2) = (pick(rng, topic.nouns), pick(rng, topic.nouns));
    let (v, adj, when) = (
        pick(rng, topic.verbs),
        pick(rng, ADJECTIVES),
        pick(rng, WHEN),
    );
    let s = match rng.gen_range(0..9) {
        0 => format!("I {v} {n1} {when}, and it went better than I expected."),
        1 => format!("{when}, I {v} {n1} again; {n2} will have to wait."),
        2 => format!("It was a {adj} day, so most of it went into {n1}."),
        3 => format!("Nobody warned me how long {n1} would take."),
        4 => format!("The trick with {n1}, it turns out, is {n2}."),
        5 => format!("I {v} {n1} and wrote down what I would change next time."),
        6 => format!("A {adj} start, but {n1} looks fine now."),
        7 => format!("Someone asked about {n1}, so here is what I know."),
        _ => format!("Next on the list: {n2}, once {n1} is done."),
    };
    capitalise(&s)
}

fn paragraph(rng: &mut ChaCha20Rng, topic: &Topic) -> String {
    let n = rng.gen_range(2..6);
    (0..n)
        .map(|_| sentence(rng, topic))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Post {
    slug: String,
    title: String,
    date: (i64, u32, u32),
    modified: u64,
    paragraphs: Vec<String>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The site's look, drawn once per proxy.
struct Style {
    font: &'static str,
    ink: String,
    accent: String,
    width: u32,
    layout: u8,
    external_css: bool,
    lang: &'static str,
}

impl Style {
    fn css(&self) -> String {
        format!(
            "body{{font-family:{};color:{};max-width:{}em;margin:2em auto;padding:0 1em;line-height:1.{}}}\n\
             a{{color:{}}}\nh1,h2{{font-weight:{}}}\nfooter{{margin-top:3em;font-size:.85em;color:#777}}\n",
            self.font,
            self.ink,
            self.width,
            5 + self.width % 3,
            self.accent,
            if self.layout == 1 { 600 } else { 400 }
        )
    }

    fn head(&self, title: &str) -> String {
        let style = if self.external_css {
            "<link rel=\"stylesheet\" href=\"/style.css\">".to_string()
        } else {
            format!("<style>\n{}</style>", self.css())
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n{style}\n</head>\n<body>\n",
            self.lang,
            escape(title)
        )
    }
}

fn date_text(d: (i64, u32, u32), layout: u8) -> String {
    let month = MONTHS[(d.1 as usize + 11) % 12];
    match layout {
        0 => format!("{:04}-{:02}-{:02}", d.0, d.1, d.2),
        1 => format!("{} {month} {}", d.2, d.0),
        _ => format!("{month} {}, {}", d.2, d.0),
    }
}

impl Site {
    /// The site for `seed`, dated as if last edited shortly before
    /// `created_unix` (when this proxy first started).
    pub fn generate(seed: [u8; 32], created_unix: u64) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let (first, last) = (pick(&mut rng, FIRST), pick(&mut rng, LAST));
        let mut topics: Vec<&Topic> = TOPICS.iter().collect();
        topics.shuffle(&mut rng);
        let topics = &topics[..rng.gen_range(1..4)];
        let title = match rng.gen_range(0..4) {
            0 => format!("{first} {last}"),
            1 => format!("{first}'s notes"),
            2 => format!(
                "{} {}",
                capitalise(pick(&mut rng, ADJECTIVES)),
                topics[0].name
            ),
            _ => format!("{last} at home"),
        };
        let style = Style {
            font: pick(&mut rng, FONTS),
            ink: format!(
                "#{:02x}{:02x}{:02x}",
                rng.gen_range(0x10..0x50),
                rng.gen_range(0x10..0x50),
                rng.gen_range(0x10..0x50)
            ),
            accent: format!(
                "hsl({}, {}%, {}%)",
                rng.gen_range(0..360),
                rng.gen_range(35..80),
                rng.gen_range(25..45)
            ),
            width: rng.gen_range(32..48),
            layout: rng.gen_range(0..3),
            external_css: rng.gen_bool(0.5),
            lang: pick(&mut rng, &["en", "en", "en-GB", "en-US"]),
        };
        // The last edit: up to a month before the first start; posts before it.
        let mut modified = created_unix.saturating_sub(rng.gen_range(3_600..30 * 86_400));
        let count = rng.gen_range(2..8);
        let mut posts = Vec::with_capacity(count);
        for i in 0..count {
            let topic = topics[rng.gen_range(0..topics.len())];
            let noun = pick(&mut rng, topic.nouns)
                .trim_start_matches("the ")
                .to_string();
            let post_title = capitalise(&match rng.gen_range(0..5) {
                0 => format!("Notes on {noun}"),
                1 => format!("{} {noun}", pick(&mut rng, ADJECTIVES)),
                2 => format!(
                    "{} and {}",
                    noun,
                    pick(&mut rng, topic.nouns).trim_start_matches("the ")
                ),
                3 => format!("What I learned about {noun}"),
                _ => format!("{noun}, part {}", rng.gen_range(2..5)),
            });
            let slug: String = post_title
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let slug = format!(
                "{slug}{}",
                if i > 0 && rng.gen_bool(0.3) {
                    format!("-{i}")
                } else {
                    String::new()
                }
            );
            let t = umbra_daemon::time::utc(modified);
            let paragraphs = (0..rng.gen_range(2..6))
                .map(|_| paragraph(&mut rng, topic))
                .collect();
            posts.push(Post {
                slug,
                title: post_title,
                date: (t.year, t.month, t.day),
                modified,
                paragraphs,
            });
            modified = modified.saturating_sub(rng.gen_range(5 * 86_400..90 * 86_400));
        }
        let mut slugs = std::collections::HashSet::new();
        posts.retain(|p| slugs.insert(p.slug.clone()));
        let newest = posts.first().map_or(created_unix, |p| p.modified);
        let about = paragraph(&mut rng, topics[0]);
        let year = umbra_daemon::time::utc(newest).year;
        let footer = match style.layout {
            0 => format!("<footer>&copy; {year} {first} {last}</footer>\n"),
            1 => format!("<footer><p>Written by {first}. <a href=\"/about.html\">About</a></p></footer>\n"),
            _ => "<footer><p><a href=\"/\">Home</a> &middot; <a href=\"/about.html\">About</a></p></footer>\n".to_string(),
        };
        let dir = ["posts", "blog", "notes"][usize::from(style.layout)];
        let mut pages = Vec::new();

        let mut index = style.head(&title);
        index.push_str(&format!(
            "<header><h1>{}</h1></header>\n<main>\n",
            escape(&title)
        ));
        if style.layout == 1 {
            index.push_str(&format!("<p>{}</p>\n", escape(&about)));
        }
        index.push_str("<ul>\n");
        for p in &posts {
            index.push_str(&format!(
                "<li><a href=\"/{dir}/{}.html\">{}</a> <small>{}</small></li>\n",
                p.slug,
                escape(&p.title),
                date_text(p.date, style.layout)
            ));
        }
        index.push_str("</ul>\n</main>\n");
        index.push_str(&footer);
        index.push_str("</body>\n</html>\n");
        pages.push(Page {
            path: "/index.html".into(),
            content_type: "text/html",
            body: index.into_bytes(),
            modified: newest,
        });

        for p in &posts {
            let mut html = style.head(&format!("{} - {title}", p.title));
            html.push_str(&format!(
                "<p><a href=\"/\">{}</a></p>\n<article>\n<h2>{}</h2>\n<p><time>{}</time></p>\n",
                escape(&title),
                escape(&p.title),
                date_text(p.date, style.layout)
            ));
            for para in &p.paragraphs {
                html.push_str(&format!("<p>{}</p>\n", escape(para)));
            }
            html.push_str("</article>\n");
            html.push_str(&footer);
            html.push_str("</body>\n</html>\n");
            pages.push(Page {
                path: format!("/{dir}/{}.html", p.slug),
                content_type: "text/html",
                body: html.into_bytes(),
                modified: p.modified,
            });
        }
        if style.layout != 0 || rng.gen_bool(0.5) {
            let mut html = style.head(&format!("About - {title}"));
            html.push_str(&format!("<h1>About</h1>\n<p>{}</p>\n", escape(&about)));
            html.push_str(&footer);
            html.push_str("</body>\n</html>\n");
            pages.push(Page {
                path: "/about.html".into(),
                content_type: "text/html",
                body: html.into_bytes(),
                modified: newest,
            });
        }
        if style.external_css {
            pages.push(Page {
                path: "/style.css".into(),
                content_type: "text/css",
                body: style.css().into_bytes(),
                modified: newest,
            });
        }
        if rng.gen_bool(0.7) {
            let robots = if rng.gen_bool(0.5) {
                "User-agent: *\nDisallow:\n"
            } else {
                "User-agent: *\nDisallow: /drafts/\n"
            };
            pages.push(Page {
                path: "/robots.txt".into(),
                content_type: "text/plain",
                body: robots.as_bytes().to_vec(),
                modified: newest,
            });
        }
        Self { pages }
    }

    /// The page at `path` (`/` is `/index.html`), if any.
    pub fn page(&self, path: &str) -> Option<&Page> {
        let path = if path.ends_with('/') && path.len() == 1 {
            "/index.html"
        } else {
            path
        };
        self.pages.iter().find(|p| p.path == path)
    }

    /// Every page.
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_seeds_two_sites_one_seed_one_site() {
        let a = Site::generate([1; 32], 1_790_000_000);
        let b = Site::generate([2; 32], 1_790_000_000);
        let home = |s: &Site| s.page("/").map(|p| p.body.clone()).expect("home");
        assert_ne!(home(&a), home(&b));
        assert_eq!(home(&a), home(&Site::generate([1; 32], 1_790_000_000)));
        for p in a.pages() {
            assert!(p.modified < 1_790_000_000 && p.path.starts_with('/'));
        }
        // Every link on the home page leads to a page of the site.
        let text = String::from_utf8(home(&a)).expect("utf8");
        for link in text.split("href=\"").skip(1) {
            let target = link.split('"').next().unwrap_or("");
            assert!(a.page(target).is_some(), "{target} is linked but missing");
        }
    }
}
