"""The demo app end to end in headless Chromium (Playwright driving Debian's chromium): upload a clip, edit it,
refuse a bad upload, run a 2x2 CFG sweep, all on the shipped toy editor. Set INSV2V_SCREENSHOTS=DIR to also save
the screenshots in README (then at 10 steps, so that they show real edits)."""

import os
import shutil
import time
from pathlib import Path

import pytest
from app_server import serve
from media import make_video

from insv2v.assets import TOY_EDITOR, TOY_PAIRS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip
EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "toy_background_7.mp4"
TIMEOUT_MS = 120_000  # generous: CI machines are small and shared

pytestmark = [
    pytest.mark.slow,  # a browser driving the served app
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One server and one browser for the module; (browser, url, demo, the server's study database)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    settings = {"model": str(TOY_EDITOR)}  # the demo's own default model
    if os.environ.get("INSV2V_SCREENSHOTS"):
        settings["default_steps"] = 10  # real-looking edits in the pictures
    tmp = tmp_path_factory.mktemp("app")
    with serve(tmp, **settings) as (url, demo), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser, url, demo, tmp / "data" / "toy-study" / "study.db"  # the shipped study's copy (serve)
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page (a new Gradio session, every control at its default) for each test, so none sees another's."""
    browser, url, *_ = browser
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_text("InsV2V Studio").first.wait_for()
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    folder = os.environ.get("INSV2V_SCREENSHOTS")
    if folder:
        from PIL import Image

        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        image = Image.open(path).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
        image.quantize(colors=96).save(path, optimize=True)  # a small PNG for the README


def test_a_closed_tab_leaves_nothing_of_its_session_behind(browser):
    browser, url, demo, _ = browser
    page = browser.new_page()
    with page.expect_request(lambda r: "/heartbeat/" in r.url) as heartbeat:  # the session's own id
        page.goto(url)
    session = heartbeat.value.url.rsplit("/", 1)[1]
    page.locator("#edit-cancel").click()  # nothing to cancel, but the session is now known
    deadline = time.monotonic() + 30
    while not demo.studio.jobs.knows(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert demo.studio.jobs.knows(session)
    page.close()
    deadline = time.monotonic() + 60  # the server notices a closed tab by its heartbeat
    while demo.studio.jobs.knows(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not demo.studio.jobs.knows(session)


def test_edit_tab_edits_an_uploaded_clip(page):
    page.locator("#edit-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#edit-input-info").get_by_text("64x64, 8 fps, 3.0 s").wait_for()
    page.locator("#edit-instruction textarea").fill("replace the beach with an ocean")
    page.locator("#edit-run").click()
    page.locator("#edit-status").get_by_text("Edited 12 frames (64x64, 8 fps)").wait_for()
    assert page.locator("#edit-output video").get_attribute("src")
    assert page.locator("#edit-side-by-side video").get_attribute("src")
    page.locator("#edit-metrics").get_by_text("warp_error").wait_for()
    page.locator("#edit-recipe [aria-label='toy_background_7_edited.json']").wait_for()
    screenshot(page, "edit-tab.png")


def test_edit_can_be_cancelled_and_the_next_one_runs(page):
    page.reload()
    long_edit(page)
    page.locator("#edit-run").click()
    page.get_by_text("edit · clip 1/11 · step").first.wait_for()  # progress with clip, step and ETA
    page.get_by_text("ETA").first.wait_for()
    page.locator("#edit-cancel").click()
    page.get_by_text("Cancelling: the edit stops after its current step.").first.wait_for()
    assert "Edited" not in page.locator("#edit-status").inner_text()
    page.locator("#edit-steps input[type=number]").fill("1")
    page.locator("#edit-steps input[type=number]").press("Enter")
    page.locator("#edit-preview").click()
    page.locator("#edit-status").get_by_text("Preview 2 frames").wait_for()


def long_edit(page) -> None:
    """Upload the example and set an edit of 11 clips x 50 steps: long enough to cancel on any machine."""
    page.locator("#edit-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#edit-instruction textarea").fill("replace the beach with an ocean")
    page.get_by_text("Sampling").click()
    page.get_by_text("Long video (LVSC) and motion compensation").click()
    for control, value in (("#edit-steps", "50"), ("#edit-frames-per-clip", "2"), ("#edit-ref-frames", "1")):
        page.locator(f"{control} input[type=number]").fill(value)
        page.locator(f"{control} input[type=number]").press("Enter")


def test_a_cancel_reaches_an_edit_still_waiting_in_the_queue(browser):
    browser, url, demo, _ = browser
    other = browser.new_page(viewport={"width": 1280, "height": 1000})  # another visitor, holding the model
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(url)
    long_edit(other)
    other.locator("#edit-run").click()
    other.get_by_text("edit · clip 1/11 · step").first.wait_for()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    with page.expect_request(lambda r: "/heartbeat/" in r.url) as heartbeat:  # the session's own id
        page.goto(url)
    session = heartbeat.value.url.rsplit("/", 1)[1]
    long_edit(page)
    page.locator("#edit-preview").click()  # waits in the queue behind the other visitor's edit
    # Cancel once the server holds the request, as a visitor who sees it queued does: the two clicks are separate
    # requests, and one sent a few milliseconds after the other may arrive first.
    deadline = time.monotonic() + 30
    while not demo.studio.jobs.knows(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert demo.studio.jobs.knows(session)
    try:
        page.locator("#edit-cancel").click()
        page.get_by_text("Cancelled: the edit waiting in the queue will not run.").first.wait_for()
        other.locator("#edit-cancel").click()
        page.get_by_text("Cancelled: nothing was written.").first.wait_for()  # it started, and stopped at once
        assert "Preview" not in page.locator("#edit-status").inner_text()
    finally:  # whatever happened, the other visitor's long edit must not hold the model for the next tests
        other.locator("#edit-cancel").click()
        page.close()
        other.close()


def test_load_recipe_fills_the_controls(page, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"input": "x.mp4", "instruction": "make it snowy", "text_cfg": 9, "steps": 3, "seed": 4}')
    page.reload()
    page.get_by_text("Sampling").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#edit-load-recipe").click()
    chooser.value.set_files(str(recipe))
    for control, value in (("#edit-text-cfg", "9"), ("#edit-steps", "3"), ("#edit-seed", "4")):
        page.wait_for_function(
            "([c, v]) => document.querySelector(c + ' input[type=number]')?.value === v", arg=[control, value]
        )
    assert page.locator("#edit-instruction textarea").input_value() == "make it snowy"
    assert not page.locator("#edit-randomize-seed input[type=checkbox]").is_checked()


def bad_upload(case: str, tmp: Path) -> Path:
    if case == "not a video":
        (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
        return tmp / "notes.mp4"
    if case == "truncated":
        (tmp / "truncated.mp4").write_bytes(EXAMPLE.read_bytes()[:1500])
        return tmp / "truncated.mp4"
    return Path(make_video(tmp / "long.mp4", num_frames=150, fps=30, size=(32, 32)))  # 5 s, over the 4 s limit


@pytest.mark.parametrize(
    "case, words",
    [
        ("not a video", "notes.mp4 cannot be read as a video"),
        ("truncated", "truncated.mp4 cannot be read as a video"),
        ("too long", "long.mp4 is 5.0 s long; this server edits videos up to 4 s"),
    ],
)
def test_edit_tab_explains_a_bad_upload(page, tmp_path, case, words):
    page.reload()
    page.locator("#edit-input input[type=file]").set_input_files(str(bad_upload(case, tmp_path)))
    page.get_by_text(words).first.wait_for()


def test_edit_tab_explains_bad_settings_and_keeps_serving(page):
    page.reload()
    page.locator("#edit-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#edit-input-info").get_by_text("64x64, 8 fps, 3.0 s").wait_for()  # uploaded: Run has a video
    page.locator("#edit-instruction textarea").fill("replace the beach with an ocean")
    page.get_by_text("Long video (LVSC) and motion compensation").click()
    for control, value in (("#edit-frames-per-clip", "4"), ("#edit-ref-frames", "4")):
        page.locator(f"{control} input[type=number]").fill(value)
        page.locator(f"{control} input[type=number]").press("Enter")
    page.locator("#edit-run").click()
    page.get_by_text("Reference frames must be in [0, Frames per clip), got 4 with 4").first.wait_for()
    page.locator("#edit-ref-frames input[type=number]").fill("1")
    page.locator("#edit-ref-frames input[type=number]").press("Enter")
    page.locator("#edit-run").click()
    page.locator("#edit-status").get_by_text("Edited 12 frames").wait_for()


def test_edit_tab_refuses_an_oversized_upload(page, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (3 * 2**20))  # over the 2 MB limit of the test server
    page.reload()
    page.locator("#edit-input input[type=file]").set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size of 2.0 Mb").first.wait_for()


def test_sweep_tab_runs_a_2x2_grid(page):
    page.reload()  # a fresh page, without the error of the test before
    page.get_by_role("tab", name="CFG Sweep").click()
    page.locator("#sweep-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#sweep-instruction textarea").fill("replace the beach with an ocean")
    page.locator("#sweep-text-cfgs textarea").fill("5, 9")
    page.locator("#sweep-video-cfgs textarea").fill("1, 1.5")
    page.locator("#sweep-run").click()
    page.locator("#sweep-status").get_by_text("4 cells of 12 frames").wait_for()
    assert page.locator("#sweep-grid").get_by_text("★ best").count() >= 1
    assert page.locator("#sweep-heatmap img").get_attribute("src")
    page.locator("#sweep-files [aria-label='sweep.csv']").wait_for()
    screenshot(page, "sweep-tab.png")


@pytest.mark.skipif(not (TOY_PAIRS / "manifest.jsonl").is_file(), reason="the toy synthetic set is not shipped")
def test_synthetic_pairs_tab_browses_the_shipped_set_refilters_and_makes_a_pair(page):
    page.reload()
    page.get_by_role("tab", name="Synthetic pairs").click()
    counts = page.locator("#synth-counts")
    counts.get_by_text("kept (").wait_for()
    total = int(counts.inner_text().split(" of ")[1].split()[0])
    assert page.locator("#synth-histograms img").get_attribute("src")
    page.locator("#synth-text").get_by_text("Output caption:").wait_for()
    assert page.locator("#synth-video video").get_attribute("src")
    page.locator("#synth-where").get_by_text(f"1 of {total}").wait_for()
    page.locator("#synth-next").click()
    page.locator("#synth-where").get_by_text(f"2 of {total}").wait_for()
    screenshot(page, "synth-tab.png")
    slider = page.locator("#synth-sim-image input[type=number]")  # nothing passes a similarity above 1
    slider.fill("1")
    slider.press("Enter")
    counts.get_by_text(f"0 of {total} kept (0%)").wait_for()
    page.locator("#synth-which").get_by_text("kept", exact=True).click()
    page.locator("#synth-text").get_by_text("No pair matches these filters.").wait_for()

    page.get_by_text("Make one pair").click()
    page.locator("#synth-make-input textarea").fill("a red circle moving right on a beach")
    page.locator("#synth-make-output textarea").fill("a blue circle moving right on a beach")
    for control, value in (("#synth-make-steps", "4"), ("#synth-make-frames", "4"), ("#synth-make-blend", "0.3")):
        page.locator(f"{control} input[type=number]").fill(value)
        page.locator(f"{control} input[type=number]").press("Enter")
    page.locator("#synth-make-run").click()
    page.locator("#synth-make-status").get_by_text("made in").wait_for()
    assert page.locator("#synth-make-video video").get_attribute("src")
    page.locator("#synth-make-text").get_by_text("of the frame may change").wait_for()  # local blending was on


def shows_in_table(text: str, page) -> None:
    """Wait until the Compare tab's table shows `text` (the table keeps hidden copies of its cells)."""
    page.wait_for_function("t => document.querySelector('#compare-table')?.innerText.includes(t)", arg=text)


def test_compare_tab_shows_the_example_computed_ahead_then_compares_a_clip_live(page):
    page.reload()
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-status").get_by_text("Example, computed ahead").wait_for()
    assert page.locator("#compare-video video").get_attribute("src")
    shows_in_table("Tune-A-Video", page)
    screenshot(page, "compare-tab.png")

    page.locator("#compare-input input[type=file]").set_input_files(str(EXAMPLE))
    page.locator("#compare-instruction textarea").fill("replace the beach with an ocean")
    page.locator("#compare-run").click()  # no captions yet: refused before InsV2V spends its minutes
    page.get_by_text("Tune-A-Video needs the source video's caption and the edited caption").first.wait_for()
    page.locator("#compare-status").get_by_text("Example, computed ahead").wait_for()
    page.locator("#compare-source-caption textarea").fill("a blue square bouncing on a beach, camera panning")
    page.locator("#compare-propose").click()
    page.wait_for_function(
        "() => document.querySelector('#compare-edited-caption textarea')?.value === "
        "'a blue square bouncing on an ocean, camera panning'"
    )
    page.get_by_text("InsV2V and frames").click()
    for control, value in (("#compare-tune-steps", "2"), ("#compare-length", "4")):
        page.locator(f"{control} input[type=number]").fill(value)
        page.locator(f"{control} input[type=number]").press("Enter")
    page.locator("#compare-run").click()
    page.wait_for_function(  # InsV2V's result replaces the example's, before Tune-A-Video's comes
        "() => { const t = document.querySelector('#compare-status')?.innerText ?? '';"
        " return t.includes('InsV2V') && !t.includes('computed ahead'); }"
    )
    page.locator("#compare-status").get_by_text("tuned 2 steps").wait_for()
    shows_in_table("PSNR to target", page)  # an example clip: its exact edit is known
    assert page.locator("#compare-video video").get_attribute("src")


def test_rate_tab_takes_a_participant_from_consent_to_the_completion_code(browser):
    """The shipped toy study, a whole session with the keyboard shortcuts; a reload midway resumes, by the id the
    browser kept (no ?pid= in the link), and a second browser tab is the same participant; then the next person at the
    same computer starts afresh."""
    from insv2v.study.store import StudyStore

    browser, url, _, study = browser
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page, second = context.new_page(), context.new_page()
    for tab in (page, second):  # the study opened in a second browser tab too, before consenting in the first
        tab.goto(url)
        tab.wait_for_function("() => Object.keys(localStorage).some(k => k.includes('study-'))")  # its id, kept
        tab.get_by_role("tab", name="Rate").click()
    page.locator("#rate-agree").click()
    second.locator("#rate-agree").click()
    second.locator("#rate-progress").get_by_text("Comparison 1 of").wait_for()
    assert len(StudyStore(study).participants()) == 1  # one person in two tabs is one participant
    second.close()
    progress = page.locator("#rate-progress")
    progress.get_by_text("Comparison 1 of").wait_for()
    total = int(progress.inner_text().split(" of ")[1])
    page.locator("#rate-video video").wait_for()
    screenshot(page, "rate-tab.png")
    for k in range(total):
        if k == 2:  # a reload: the participant continues at the first comparison not answered
            page.reload()
            page.get_by_role("tab", name="Rate").click()
        progress.get_by_text(f"Comparison {k + 1} of {total}").wait_for()
        assert page.locator("#rate-video video").get_attribute("src")
        for key in ("1", "5", "9"):  # A, B, can't tell
            page.keyboard.press(key)
        page.wait_for_function(
            "() => [0, 1, 2].every(q => document.querySelector(`#rate-q${q} input:checked`))"
        )  # fmt: skip
        page.keyboard.press("Enter")
    page.locator("#rate-code").get_by_text("Your completion code").wait_for()
    page.locator("#rate-afresh").click()
    page.locator("#rate-agree").click()
    progress.get_by_text(f"Comparison 1 of {total}").wait_for()
    people = StudyStore(study).participants()
    assert len(people) == 2 and people[0]["completion_code"] and not people[1]["completion_code"]
    context.close()
