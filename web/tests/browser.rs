//! The web page in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromedriver`, installed by `scripts/install-browser.sh`): type a prompt, generate, see the
//! image; upload an image, ask, read the answer. Screenshots of both go to `target/browser/`.
//! Served a LLaVA model, the same page hides what the model cannot do and chats instead (and
//! draws too, for a LLaVA model trained to generate).
//!
//! Without Chromium this test fails (it does not skip): run `scripts/install-browser.sh`.
//! `CHROMEDRIVER` and `CHROMIUM` name other binaries; `VQRAE_BROWSER_MODEL` serves another model
//! than the tiny test model (e.g. `models/vqrae-easyvqa`, for the screenshot in the docs).

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::Engine as _;
use candle_core::{DType, Device};
use common::{toy_image, Client, Resp};
use hyper::Method;
use image::RgbImage;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use vqrae_unified::model::UnifiedModel;
use vqrae_web::{ServeConfig, ServedModel, Server};

const INSTALL: &str = "scripts/install-browser.sh";
/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The page's placeholder behind images (`#eee`).
const PLACEHOLDER: [u8; 3] = [0xee, 0xee, 0xee];
const WINDOW: (u32, u32) = (1000, 1300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where screenshots go: `target/browser/`.
fn shots_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser")
}

/// `$var`, else `names` searched on `PATH`.
fn find_binary(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// chromedriver, killed on drop.
struct Driver {
    child: Child,
    client: Client,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Self {
            child,
            client: Client::new(addr),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(addr).is_ok() {
                let ready = driver.client.get("/status").await;
                if ready.is_ok_and(|r| r.json()["value"]["ready"] == true) {
                    return Ok(driver);
                }
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer on {addr} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn webdriver_value(what: &str, r: Resp) -> Result<Value> {
    let v: Value = serde_json::from_slice(&r.body)
        .with_context(|| format!("{what}: not JSON ({}): {}", r.status, r.text()))?;
    if r.status != 200 {
        bail!(
            "{what}: WebDriver {}: {} {}",
            r.status,
            v["value"]["error"],
            v["value"]["message"]
        );
    }
    Ok(v["value"].clone())
}

/// One WebDriver session (a headless Chromium).
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    async fn open(driver: &'a Driver, chromium: &Path) -> Result<Self> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--force-device-scale-factor=1",
                    "--hide-scrollbars",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ],
            },
        }}});
        let r = driver.client.post("/session", &caps).await?;
        let v = webdriver_value("opening a Chromium session", r)?;
        let session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {v}"))?
            .to_string();
        Ok(Self { driver, session })
    }

    async fn call(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("/session/{}{path}", self.session);
        let r = match method {
            Method::GET => self.driver.client.get(&url).await?,
            m => {
                self.driver
                    .client
                    .send(
                        m,
                        &url,
                        serde_json::to_vec(&body)?,
                        &[("content-type", "application/json")],
                    )
                    .await?
            }
        };
        webdriver_value(path, r)
    }

    async fn close(self) -> Result<()> {
        self.call(Method::DELETE, "", json!({})).await.map(|_| ())
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.call(Method::POST, "/url", json!({ "url": url }))
            .await
            .map(|_| ())
    }

    async fn find(&self, css: &str) -> Result<String> {
        let v = self
            .call(
                Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        v[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{css}: no element reference in {v}"))
    }

    /// Clears a field and types `text` into it.
    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(Method::POST, &format!("/element/{el}/clear"), json!({}))
            .await?;
        self.call(
            Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await
        .map(|_| ())
    }

    /// Chooses the file `path` in a file input.
    async fn choose_file(&self, css: &str, path: &Path) -> Result<()> {
        let el = self.find(css).await?;
        let path = path
            .canonicalize()
            .with_context(|| format!("{} for upload", path.display()))?;
        self.call(
            Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": path.to_string_lossy() }),
        )
        .await
        .map(|_| ())
    }

    async fn click(&self, css: &str) -> Result<()> {
        let el = self.find(css).await?;
        self.call(Method::POST, &format!("/element/{el}/click"), json!({}))
            .await
            .map(|_| ())
    }

    /// Runs `body` (a function body: `return ...;`) in the page.
    async fn js(&self, body: &str) -> Result<Value> {
        self.call(
            Method::POST,
            "/execute/sync",
            json!({"script": body, "args": []}),
        )
        .await
    }

    /// Polls `body` until it returns something truthy (returned), or fails after `secs`.
    async fn wait_for(&self, what: &str, body: &str, secs: u64) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.js(body).await?;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self
                    .js("return document.body.innerText;")
                    .await
                    .unwrap_or_default();
                bail!("timed out after {secs} s waiting for {what}; the page reads:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A screenshot of the viewport, saved to `path` and decoded.
    async fn screenshot(&self, path: &Path) -> Result<RgbImage> {
        let v = self.call(Method::GET, "/screenshot", Value::Null).await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or_else(|| anyhow!("screenshot: {v}"))?)?;
        std::fs::write(path, &png).with_context(|| format!("writing {}", path.display()))?;
        let img = image::load_from_memory(&png)
            .context("the screenshot is not an image")?
            .to_rgb8();
        Ok(img)
    }
}

/// The content box (inside the border) of the element `css`: (x, y, width, height) in CSS
/// pixels of the viewport.
async fn content_box(b: &Browser<'_>, css: &str) -> Result<[f64; 4]> {
    let v = b
        .js(&format!(
            "const e = document.querySelector({css:?}); const r = e.getBoundingClientRect(); \
             return [r.x + e.clientLeft, r.y + e.clientTop, e.clientWidth, e.clientHeight];"
        ))
        .await?;
    let f = |i: usize| v[i].as_f64().unwrap_or(f64::NAN);
    Ok([f(0), f(1), f(2), f(3)])
}

/// How the screenshot's pixels in `bx` (the content box of an `<img>` showing `src`, scaled
/// without smoothing) compare with `src`: the share that match the source pixel they show
/// (each channel within 24), and the share that are the page's empty placeholder.
fn compare_shown(shot: &RgbImage, bx: [f64; 4], src: &RgbImage) -> Result<(f64, f64)> {
    // a pixel off each edge: an edge pixel may blend with the border
    let (x0, y0) = (bx[0].ceil() as u32 + 1, bx[1].ceil() as u32 + 1);
    let (x1, y1) = (
        (bx[0] + bx[2]).floor() as u32 - 1,
        (bx[1] + bx[3]).floor() as u32 - 1,
    );
    ensure!(
        bx.iter().all(|v| v.is_finite() && *v >= 0.0)
            && x1 > x0
            && y1 > y0
            && x1 <= shot.width()
            && y1 <= shot.height(),
        "the image box {bx:?} is not inside the {}x{} screenshot",
        shot.width(),
        shot.height()
    );
    let (mut same, mut empty, mut all) = (0usize, 0usize, 0usize);
    for y in y0..y1 {
        for x in x0..x1 {
            let p = shot.get_pixel(x, y).0;
            let sx = ((x as f64 + 0.5 - bx[0]) / bx[2] * src.width() as f64) as u32;
            let sy = ((y as f64 + 0.5 - bx[1]) / bx[3] * src.height() as f64) as u32;
            let q = src
                .get_pixel(sx.min(src.width() - 1), sy.min(src.height() - 1))
                .0;
            all += 1;
            same += usize::from((0..3).all(|c| p[c].abs_diff(q[c]) <= 24));
            empty += usize::from(p == PLACEHOLDER);
        }
    }
    Ok((same as f64 / all as f64, empty as f64 / all as f64))
}

/// The server under test: the tiny model, or `VQRAE_BROWSER_MODEL`.
struct Running {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), vqrae_web::ServeError>>,
}

async fn start_server() -> Result<Running> {
    let (dir, id) = match std::env::var_os("VQRAE_BROWSER_MODEL").filter(|v| !v.is_empty()) {
        Some(d) => {
            let d = PathBuf::from(d);
            let d = if d.is_relative() { repo().join(d) } else { d };
            (d, String::new())
        }
        None => (common::model_dir().to_path_buf(), "tiny".to_string()),
    };
    serve(dir, id).await
}

/// The server on the model directory `dir`, named `id` (empty: the directory's name).
async fn serve(dir: PathBuf, id: String) -> Result<Running> {
    let cfg = ServeConfig {
        model: dir.clone(),
        model_id: id,
        port: 0,
        ..ServeConfig::default()
    };
    let model = tokio::task::spawn_blocking(move || {
        UnifiedModel::load(&dir, &Device::Cpu, DType::F32).map_err(anyhow::Error::from)
    })
    .await??;
    serve_model(cfg, model.into()).await
}

/// The server on `model`, as `cfg` says.
async fn serve_model(cfg: ServeConfig, model: ServedModel) -> Result<Running> {
    let server = Server::bind(cfg, model).await?;
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Ok(Running {
        addr,
        shutdown: tx,
        task,
    })
}

/// What the page did, for the checks.
struct Outcome {
    image_natural: (u64, u64),
    /// Shares of the screenshot's image box that show the generated image's pixels, and that
    /// are the empty placeholder.
    image_shown: f64,
    image_empty: f64,
    answer: String,
}

/// Opens the page and waits until it has read the model from the server.
async fn open_page(b: &Browser<'_>, base: &str) -> Result<()> {
    b.goto(&format!("{base}/")).await?;
    b.wait_for(
        "the page to reach the server",
        r#"const s = document.getElementById("status").textContent;
           return s.startsWith("model ") ? s : null;"#,
        30,
    )
    .await?;
    Ok(())
}

/// Drives the page: generate, then ask.
async fn drive(b: &Browser<'_>, base: &str, upload: &Path, shots: &Path) -> Result<Outcome> {
    open_page(b, base).await?;

    let (image_natural, image_shown, image_empty) = generate_on_page(b, shots).await?;
    let answer = ask_on_page(b, upload, shots).await?;
    Ok(Outcome {
        image_natural,
        image_shown,
        image_empty,
        answer,
    })
}

/// Fills in the generate form, submits it and waits until every image on the page has loaded
/// (the final ones, after any streamed previews).
async fn generate_and_wait(b: &Browser<'_>, prompt: &str, n: u32, seed: u64) -> Result<()> {
    b.type_into("#prompt", prompt).await?;
    b.type_into("#n", &n.to_string()).await?;
    b.type_into("#seed", &seed.to_string()).await?;
    b.click("#genbtn").await?;
    let done = b
        .wait_for(
            "the generated images to load",
            r#"const err = document.getElementById("generr").textContent;
               if (err) return "error: " + err;
               if (document.getElementById("genbtn").disabled) return null;
               const imgs = [...document.querySelectorAll('#images img')];
               if (imgs.length === 0 || !imgs.every((i) => i.complete && i.naturalWidth > 0)) return null;
               return "ok";"#,
            120,
        )
        .await?;
    ensure!(done == "ok", "generating on the page failed: {done}");
    Ok(())
}

/// Text to image: two images of "a red circle"; their natural size, and the shares of the
/// image box that show the image and the placeholder.
async fn generate_on_page(b: &Browser<'_>, shots: &Path) -> Result<((u64, u64), f64, f64)> {
    generate_and_wait(b, "a red circle", 2, 7).await?;
    let natural = b
        .js(r#"const i = document.querySelector('#images img');
               return [i.naturalWidth, i.naturalHeight, document.querySelectorAll('#images img').length];"#)
        .await?;
    let n_images = natural[2].as_u64().unwrap_or(0);
    ensure!(
        n_images == 2,
        "asked for 2 images, the page shows {n_images}"
    );
    let image_natural = (
        natural[0].as_u64().unwrap_or(0),
        natural[1].as_u64().unwrap_or(0),
    );
    let shot = b.screenshot(&shots.join("generate.png")).await?;
    let src = b
        .js("return document.querySelector('#images img').src;")
        .await?;
    let b64 = src
        .as_str()
        .and_then(|s| s.strip_prefix("data:image/png;base64,"))
        .ok_or_else(|| anyhow!("the <img> is not an inline PNG: {src:.80}"))?;
    let generated =
        image::load_from_memory(&base64::engine::general_purpose::STANDARD.decode(b64)?)?.to_rgb8();
    let (image_shown, image_empty) =
        compare_shown(&shot, content_box(b, "#images img").await?, &generated)?;

    Ok((image_natural, image_shown, image_empty))
}

/// Chooses `upload` in the page's file input and waits for its preview.
async fn upload_on_page(b: &Browser<'_>, upload: &Path) -> Result<()> {
    b.choose_file("#file", upload).await?;
    b.wait_for(
        "the upload's preview",
        r#"const p = document.getElementById("preview");
           return p.complete && p.naturalWidth > 0;"#,
        30,
    )
    .await?;
    Ok(())
}

/// Clicks "ask" and waits for the page's answer (or its error).
async fn ask_and_wait(b: &Browser<'_>) -> Result<()> {
    b.click("#askbtn").await?;
    let done = b
        .wait_for(
            "the answer",
            r#"const err = document.getElementById("askerr").textContent;
               if (err) return "error: " + err;
               return document.getElementById("askbtn").disabled ? null : "ok";"#,
            120,
        )
        .await?;
    ensure!(done == "ok", "asking on the page failed: {done}");
    Ok(())
}

/// Asks about an uploaded image; the answer the page shows.
async fn ask_on_page(b: &Browser<'_>, upload: &Path, shots: &Path) -> Result<String> {
    upload_on_page(b, upload).await?;
    b.type_into("#question", "what color is the shape?").await?;
    ask_and_wait(b).await?;
    let answer = b
        .js(r#"return document.getElementById("answer").textContent;"#)
        .await?
        .as_str()
        .unwrap_or_default()
        .to_string();
    b.js(r#"document.getElementById("answer").scrollIntoView({block: "center"}); return 0;"#)
        .await?;
    b.screenshot(&shots.join("answer.png")).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_generates_an_image_and_answers_a_question_in_chromium() -> Result<()> {
    let (chromedriver, chromium) = browser_binaries();

    let shots = shots_dir();
    std::fs::create_dir_all(&shots)?;
    for f in ["generate.png", "answer.png"] {
        let _ = std::fs::remove_file(shots.join(f));
    }
    // the upload: a red disc, written as a PNG file the page's file input reads
    let upload = shots.join("upload.png");
    toy_image(0).save(&upload)?;

    let server = start_server().await?;
    let base = format!("http://{}", server.addr);
    let models = Client::new(server.addr).get("/v1/models").await?;
    let size = models.json()["data"][0]["image_size"].as_u64();
    let driver = Driver::start(&chromedriver).await?;
    let browser = Browser::open(&driver, &chromium).await?;
    let outcome = drive(&browser, &base, &upload, &shots).await;
    let closed = browser.close().await;
    drop(driver);
    let _ = server.shutdown.send(());
    server.task.await??;
    let out = outcome?;
    closed?;

    // the generated image loaded at the model's size and is drawn in the screenshot
    let (w, h) = out.image_natural;
    assert!(
        w > 0 && h > 0,
        "the generated <img> did not load: natural size {w}x{h}"
    );
    if let Some(size) = size {
        assert_eq!((w, h), (size, size), "the generated image's size");
    }
    for f in ["generate.png", "answer.png"] {
        let p = shots.join(f);
        let img = image::open(&p).with_context(|| format!("reading {}", p.display()))?;
        assert!(img.width() >= 400 && img.height() >= 400, "{f}: {img:?}");
    }
    assert!(
        out.image_shown > 0.9 && out.image_empty < 0.1,
        "the screenshot does not show the generated image in its box: {:.0}% of the box \
         matches it, {:.0}% is the empty placeholder (see {})",
        100.0 * out.image_shown,
        100.0 * out.image_empty,
        shots.join("generate.png").display()
    );
    assert!(
        !out.answer.trim().is_empty(),
        "the page shows no answer (see {})",
        shots.join("answer.png").display()
    );
    println!(
        "screenshots in {}: the image box shows the generated image ({:.1}% of its pixels \
         match); the answer: {:?}",
        shots.display(),
        100.0 * out.image_shown,
        out.answer
    );
    Ok(())
}

/// chromedriver and Chromium, or a panic that says how to install them.
fn browser_binaries() -> (PathBuf, PathBuf) {
    let missing = |what: &str, var: &str| {
        format!(
            "{what} is not installed (or not on PATH; {var} names another): the browser test \
             needs Chromium and chromedriver. Install them with `{INSTALL}` (apt: chromium, \
             chromium-driver)."
        )
    };
    let chromedriver = find_binary("CHROMEDRIVER", &["chromedriver"])
        .unwrap_or_else(|| panic!("{}", missing("chromedriver", "CHROMEDRIVER")));
    let chromium = find_binary(
        "CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .unwrap_or_else(|| panic!("{}", missing("Chromium", "CHROMIUM")));
    (chromedriver, chromium)
}

/// The grey of the rows a partial image has no codes for yet.
const BLANK: [u8; 3] = [128, 128, 128];

/// Generates one image on the page while a MutationObserver records every `src` the first
/// `<img>` had: the srcs in order (the partial images, then the final one) and the page's
/// count of partials shown (`#images[data-partials]`).
async fn watch_preview(b: &Browser<'_>, base: &str) -> Result<(Vec<String>, String)> {
    open_page(b, base).await?;
    b.js(r#"window.vqraeSrcs = [];
            const box = document.getElementById("images");
            new MutationObserver((records) => {
              for (const r of records) {
                if (r.attributeName === "src" && r.target === box.querySelector("img")) {
                  window.vqraeSrcs.push(r.oldValue);
                }
              }
            }).observe(box, { subtree: true, attributes: true, attributeFilter: ["src"],
                              attributeOldValue: true });
            return 0;"#)
        .await?;
    generate_and_wait(b, "a blue circle", 1, 5).await?;
    let v = b
        .js(
            r#"return [window.vqraeSrcs, document.querySelector('#images img').src,
                       document.getElementById("images").dataset.partials];"#,
        )
        .await?;
    // each record holds the value before it; the last value is the current one
    let mut srcs: Vec<String> = v[0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    srcs.push(v[1].as_str().unwrap_or_default().to_string());
    Ok((srcs, v[2].as_str().unwrap_or_default().to_string()))
}

fn inline_png(src: &str) -> Result<RgbImage> {
    let b64 = src
        .strip_prefix("data:image/png;base64,")
        .ok_or_else(|| anyhow!("the <img> is not an inline PNG: {src:.80}"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64)?;
    Ok(image::load_from_memory(&bytes)?.to_rgb8())
}

fn row_is_blank(img: &RgbImage, y: u32) -> bool {
    (0..img.width()).all(|x| img.get_pixel(x, y).0 == BLANK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_image_filling_in_in_chromium() -> Result<()> {
    let (chromedriver, chromium) = browser_binaries();
    let server = start_server().await?;
    let base = format!("http://{}", server.addr);
    let driver = Driver::start(&chromedriver).await?;
    let browser = Browser::open(&driver, &chromium).await?;
    let seen = watch_preview(&browser, &base).await;
    let closed = browser.close().await;
    drop(driver);
    let _ = server.shutdown.send(());
    server.task.await??;
    let (srcs, partials) = seen?;
    closed?;

    // the page asks for 3 partials: the <img> showed each, then the final image
    assert_eq!(partials, "3", "partials the page counted");
    assert_eq!(
        srcs.len(),
        4,
        "the first <img>'s srcs: 3 partials and the final image"
    );
    let mut distinct = srcs.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "every update showed a new image");
    let first = inline_png(&srcs[0])?;
    let last = inline_png(&srcs[3])?;
    assert_eq!(first.dimensions(), last.dimensions());
    // the first partial has a quarter of the rows or fewer: its lower half is grey
    let h = first.height();
    assert!(
        (h / 2..h).all(|y| row_is_blank(&first, y)),
        "the first partial's lower half is not blank"
    );
    assert!(
        !row_is_blank(&first, 0),
        "the first partial shows its first row"
    );
    assert!(
        !row_is_blank(&last, h - 1),
        "the final image is drawn to the bottom"
    );
    Ok(())
}

/// The page on the shipped model (which has a model card): the card panel shows the caption
/// vocabulary, the question kinds and the measured guidance, which the generate form takes as
/// its default; example prompts and questions fill the fields when clicked; a yes/no question
/// shows its conclusion as the answer and its reasoning beside it.
async fn check_card(b: &Browser<'_>, base: &str, upload: &Path, shots: &Path) -> Result<Value> {
    b.goto(&format!("{base}/")).await?;
    b.wait_for(
        "the model card",
        r#"return document.getElementById("card").hidden ? null : "shown";"#,
        30,
    )
    .await?;
    b.click("#card-prompts button:nth-of-type(3)").await?;
    b.click("#card-asks button:nth-of-type(3)").await?;
    upload_on_page(b, upload).await?;
    ask_and_wait(b).await?;
    b.js(r#"document.getElementById("card").scrollIntoView(); return 0;"#)
        .await?;
    b.screenshot(&shots.join("card.png")).await?;
    b.js(r##"const t = (id) => document.getElementById(id).textContent;
            return {words: t("card-words"), questions: t("card-questions"),
                    guidance: t("card-guidance"), prompts: document.querySelectorAll("#card-prompts button").length,
                    guidance_input: document.getElementById("guidance").value,
                    prompt: document.getElementById("prompt").value,
                    question: document.getElementById("question").value,
                    answer: t("answer"), reasoning: t("reasoning"),
                    panels: ["gen-section", "about", "chatlog", "newchat"].map(
                      (id) => document.getElementById(id).offsetParent !== null),
                    file_required: document.getElementById("file").required};"##)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_model_card_in_chromium() -> Result<()> {
    let (chromedriver, chromium) = browser_binaries();
    let shots = shots_dir();
    std::fs::create_dir_all(&shots)?;
    // the upload: a red disc on white at the shipped model's size
    let upload = shots.join("upload-card.png");
    RgbImage::from_fn(64, 64, |x, y| {
        let (dx, dy) = (x as f32 - 32.0, y as f32 - 32.0);
        image::Rgb(if dx * dx + dy * dy <= 324.0 {
            [255, 0, 0]
        } else {
            [255, 255, 255]
        })
    })
    .save(&upload)?;
    let server = serve(repo().join("models/vqrae-easyvqa"), String::new()).await?;
    let base = format!("http://{}", server.addr);
    let card = Client::new(server.addr).get("/v1/models").await?.json()["data"][0]["card"].clone();
    let driver = Driver::start(&chromedriver).await?;
    let browser = Browser::open(&driver, &chromium).await?;
    let shown = check_card(&browser, &base, &upload, &shots).await;
    let closed = browser.close().await;
    drop(driver);
    let _ = server.shutdown.send(());
    server.task.await??;
    let shown = shown?;
    closed?;

    let text = |k: &str| shown[k].as_str().unwrap_or_default().to_string();
    for word in ["red", "teal", "rectangle", "triangle", "left"] {
        assert!(text("words").contains(word), "caption words: {shown}");
    }
    for kind in ["color", "shape", "yes/no"] {
        assert!(text("questions").contains(kind), "question kinds: {shown}");
    }
    assert!(text("guidance").contains("t2i-fresh-seeds.json"), "{shown}");
    assert_eq!(
        shown["prompts"],
        json!(card["captions"]["examples"].as_array().map(Vec::len))
    );
    assert_eq!(
        text("guidance_input"),
        "2",
        "the form's guidance is the card's"
    );
    // the third example prompt and question were clicked into the fields
    assert_eq!(shown["prompt"], card["captions"]["examples"][2], "{shown}");
    let questions: Vec<Value> = card["questions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|k| k["examples"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(shown["question"], questions[2], "{shown}");
    // "is there a red shape?" about a red disc: "yes", with its reasoning
    assert_eq!(text("answer"), "yes", "{shown}");
    assert_eq!(text("reasoning"), "reasoning: red, so yes", "{shown}");
    // a unified model's page: drawing shown, no chat, the image required (as before LLaVA)
    assert_eq!(
        shown["panels"],
        json!([true, false, false, false]),
        "{shown}"
    );
    assert_eq!(shown["file_required"], true, "{shown}");
    Ok(())
}

/// A model id that is markup: the page must show it as text, never parse it.
const HOSTILE_ID: &str = "<img src=x onerror=\"window.pwned=1\">tiny-llava";

/// The tiny LLaVA model (`vqrae_test_support::tiny_llava_model`), named [`HOSTILE_ID`].
async fn serve_llava() -> Result<Running> {
    let t = vqrae_test_support::shared_tiny_llava(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "vqrae-web-browser-llava-",
    );
    let cfg = ServeConfig {
        model: t.dir.clone(),
        models_root: t.models_root.clone(),
        model_id: HOSTILE_ID.into(),
        port: 0,
        ..ServeConfig::default()
    };
    let model = {
        let (dir, root) = (t.dir.clone(), t.models_root.clone());
        tokio::task::spawn_blocking(move || {
            ServedModel::load(&dir, &root, None, &Device::Cpu, DType::F32)
                .map_err(anyhow::Error::from)
        })
        .await??
    };
    serve_model(cfg, model).await
}

/// What the page shows, as JSON: which panels are shown, the status and about texts, whether
/// the id's markup ran, the conversation's turns.
const LLAVA_STATE: &str = r##"const shown = (id) => document.getElementById(id).offsetParent !== null;
    return {gen: shown("gen-section"), card: shown("card"), about: shown("about"),
            chatlog: shown("chatlog"), file: shown("file"),
            file_required: document.getElementById("file").required,
            status: document.getElementById("status").textContent,
            about_text: document.getElementById("about").textContent,
            pwned: window.pwned === 1 || document.querySelector('img[src="x"]') !== null,
            turns: [...document.querySelectorAll("#chatlog .turn")].map((t) =>
              [t.className, t.textContent, t.querySelector("img") !== null])};"##;

/// Drives the page on a LLaVA model: a text-only message, then a question about an uploaded
/// image, then a new chat; the page's state after each step.
async fn chat_on_page(
    b: &Browser<'_>,
    base: &str,
    upload: &Path,
    shots: &Path,
) -> Result<[Value; 4]> {
    open_page(b, base).await?;
    let first = b.js(LLAVA_STATE).await?;
    b.type_into("#question", "hello").await?;
    b.type_into("#maxtokens", "4").await?;
    ask_and_wait(b).await?;
    let text = b.js(LLAVA_STATE).await?;
    upload_on_page(b, upload).await?;
    b.type_into("#question", "what colour is the shape?")
        .await?;
    ask_and_wait(b).await?;
    let image = b.js(LLAVA_STATE).await?;
    b.screenshot(&shots.join("llava.png")).await?;
    b.click("#newchat").await?;
    let cleared = b.js(LLAVA_STATE).await?;
    Ok([first, text, image, cleared])
}

/// The page on a LLaVA model: no drawing panel and no card, the model's facts instead; the
/// image is optional: a text message is answered, then a question about an image, each as a
/// turn of the conversation; model-provided text is shown as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_chats_with_a_llava_model_in_chromium() -> Result<()> {
    let (chromedriver, chromium) = browser_binaries();
    let shots = shots_dir();
    std::fs::create_dir_all(&shots)?;
    let upload = shots.join("upload-llava.png");
    toy_image(1).save(&upload)?;
    let server = serve_llava().await?;
    let base = format!("http://{}", server.addr);
    let driver = Driver::start(&chromedriver).await?;
    let browser = Browser::open(&driver, &chromium).await?;
    let seen = chat_on_page(&browser, &base, &upload, &shots).await;
    let closed = browser.close().await;
    drop(driver);
    let _ = server.shutdown.send(());
    server.task.await??;
    let [first, text, image, cleared] = seen?;
    closed?;

    assert_eq!(
        (
            &first["gen"],
            &first["card"],
            &first["about"],
            &first["chatlog"]
        ),
        (&json!(false), &json!(false), &json!(true), &json!(true)),
        "panels on a LLaVA model: {first}"
    );
    assert_eq!(first["file"], true, "an image can still be chosen: {first}");
    assert_eq!(first["file_required"], false, "{first}");
    let status = first["status"].as_str().unwrap_or_default();
    assert!(
        status.contains(HOSTILE_ID),
        "the id is shown as text: {status}"
    );
    assert_eq!(first["pwned"], false, "the model id's markup ran: {first}");
    let about = first["about_text"].as_str().unwrap_or_default();
    assert!(
        about.contains("llava") && about.contains("tiny/base.gguf"),
        "{about}"
    );

    let turns = |v: &Value| v["turns"].as_array().cloned().unwrap_or_default();
    let t = turns(&text);
    assert_eq!(t.len(), 2, "a text message and its reply: {text}");
    assert_eq!(t[0], json!(["turn user", "hello", false]));
    assert_eq!(t[1][0], "turn assistant");
    assert!(t[1][1].as_str().is_some_and(|r| !r.is_empty()), "{text}");
    let t = turns(&image);
    assert_eq!(t.len(), 4, "then a question about the image: {image}");
    assert_eq!(
        t[2],
        json!(["turn user", "what colour is the shape?", true])
    );
    assert!(t[3][1].as_str().is_some_and(|r| !r.is_empty()), "{image}");
    assert!(turns(&cleared).is_empty(), "a new chat: {cleared}");
    Ok(())
}

/// The page on a LLaVA model trained to draw (`vqrae_test_support::tiny_generating_llava`):
/// the drawing form beside the chat, the drawn size (its tokenizer's 32 px, not its encoder's
/// 16) in the status and the model's facts; generating on the page shows the model's images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_with_a_llava_model_that_generates_in_chromium() -> Result<()> {
    let (chromedriver, chromium) = browser_binaries();
    let root = tempfile::Builder::new()
        .prefix("vqrae-web-browser-draws-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let scratch = root.path().to_path_buf();
    let (cfg, model) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (inputs, dir) = vqrae_test_support::tiny_generating_llava(&scratch, 3)?;
        let model = ServedModel::load(&dir, &inputs.models_root, None, &Device::Cpu, DType::F32)?;
        let cfg = ServeConfig {
            model: dir,
            models_root: inputs.models_root.clone(),
            model_id: "tiny-draws".into(),
            port: 0,
            ..ServeConfig::default()
        };
        Ok((cfg, model))
    })
    .await??;
    let server = serve_model(cfg, model).await?;
    let base = format!("http://{}", server.addr);
    let driver = Driver::start(&chromedriver).await?;
    let browser = Browser::open(&driver, &chromium).await?;
    let seen = async {
        open_page(&browser, &base).await?;
        let state = browser.js(LLAVA_STATE).await?;
        generate_and_wait(&browser, "a red circle", 2, 7).await?;
        let sizes = browser
            .js("return [...document.querySelectorAll('#images img')].map((i) => [i.naturalWidth, i.naturalHeight]);")
            .await?;
        Ok::<_, anyhow::Error>((state, sizes))
    }
    .await;
    let closed = browser.close().await;
    drop(driver);
    let _ = server.shutdown.send(());
    server.task.await??;
    let (state, sizes) = seen?;
    closed?;

    assert_eq!(
        (
            &state["gen"],
            &state["card"],
            &state["about"],
            &state["chatlog"]
        ),
        (&json!(true), &json!(false), &json!(true), &json!(true)),
        "panels on a LLaVA model that draws: {state}"
    );
    let status = state["status"].as_str().unwrap_or_default();
    assert!(status.contains("32x32 images"), "{status}");
    let about = state["about_text"].as_str().unwrap_or_default();
    assert!(
        about.contains("Draws") && about.contains("32x32 pixels, 4x4 codes of 64"),
        "{about}"
    );
    assert_eq!(sizes, json!([[32, 32], [32, 32]]));
    Ok(())
}
