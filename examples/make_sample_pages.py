"""Render the sample students' scanned pages for ``examples/midterm``.

    pip install -e . && python examples/make_sample_pages.py

The pages are committed; run this only to change them. Answers are written with the question
markers (``Q4a:``) that the transcription prompt asks the model to keep, some right, some
partly right, one page deliberately crooked and faint like a bad scan.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent / "midterm" / "submissions"
WIDTH, HEIGHT, MARGIN = 850, 1100, 60

ANSWERS: dict[str, dict[int, list[str]]] = {
    "alice": {
        1: [
            "Q1: (b) hash table",
            "Q2: O(log n). Each comparison halves the part of the array that can still "
            "hold the key, so after log2(n) steps one element is left.",
            "Q3: True. Repeatedly remove a vertex with no incoming edges; a DAG always has "
            "one, so this produces an ordering.",
        ],
        2: [
            "Q4a: 200 calls / 10 workers = 20 rounds. 20 x 0.2 s = 4.0 s.",
            "Q4b: 240 requests / 20 per second = 12 s.",
        ],
        3: [
            "Q5: After each failure wait base * 2^attempt, capped. Jitter randomises the wait "
            "so clients that failed together do not all retry at the same instant and overload "
            "the server again.",
            "Q6: def fib(n):",
            "        a, b = 0, 1",
            "        for _ in range(n):",
            "            a, b = b, a + b",
            "        return a",
            "Q7: 429 Too Many Requests; the Retry-After header.",
        ],
        4: [
            "Q8: Base case n=1: 1 = 1^2. Step: if 1+3+...+(2k-1) = k^2 then adding 2k+1 gives "
            "k^2 + 2k + 1 = (k+1)^2. So it holds for all n.",
            "Q9: Writing after every task costs one small append each time; with fsync that "
            "can be milliseconds per task, but a crash loses nothing. Every k tasks is cheaper "
            "but a crash redoes up to k tasks, which costs money for LLM calls. An append-only "
            "journal makes per-task writes cheap, so per task is usually best.",
        ],
    },
    "bob": {
        1: [
            "Q1: (c)",
            "Q2: O(n) because you might have to look at every element.",
            "Q3: True, because there are no cycles.",
        ],
        2: [
            "Q4a: 200 x 0.2 = 40 s, divided by 10 workers = 4 s",
            "Q4b: 240 / 20 = 12 seconds, plus retries maybe 13 s",
        ],
        3: [
            "Q5: You wait longer each time you fail. Jitter is random noise.",
            "Q6: def fib(n):",
            "        if n < 2: return n",
            "        return fib(n-1) + fib(n-2)",
            "Q7: 503",
        ],
        4: [
            "Q8: For n = 1, 2, 3 it works (1, 4, 9) so it is true.",
            "Q9: Every task is safer. Every k tasks is faster.",
        ],
    },
    "chen": {
        1: [
            "Q1: b",
            "Q2: log n, halving",
            "Q3: [crossed out: False] True - take a source vertex first.",
        ],
        2: [
            "Q4a: 4 s (20 rounds of 0.2 s)",
            "Q4b: 12 s minimum, if no request is refused.",
        ],
        3: [
            "Q5: Exponential backoff doubles the delay after each failure up to a cap. Without "
            "jitter, synchronized clients retry in waves (thundering herd).",
            "Q6: def fib(n):",
            "        a, b = 0, 1",
            "        for i in range(n): a, b = b, a+b",
            "        return a",
            "Q7: 429, retry-after",
        ],
        4: [
            "Q8: Induction. n=1 true. Assume for k. Sum to k+1 = k^2 + (2k+1) = (k+1)^2.",
            "Q9: (ran out of time)",
        ],
    },
}


def render(lines: list[str], page: int, student: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    image = Image.new("L", (WIDTH, HEIGHT), 255)
    draw = ImageDraw.Draw(image)
    y = MARGIN
    draw.text((MARGIN, y), f"CS 210 Midterm   name: {student}   page {page}", font=font, fill=60)
    y += 70
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        for part in textwrap.wrap(line.strip(), width=60) or [""]:
            draw.text((MARGIN + indent * 8, y), part, font=font, fill=20)
            y += 34
        y += 18
    return image


def main() -> None:
    font = ImageFont.load_default(size=22)
    for student, pages in ANSWERS.items():
        folder = ROOT / student
        folder.mkdir(parents=True, exist_ok=True)
        for page, lines in pages.items():
            image = render(lines, page, student, font)
            if student == "chen" and page == 3:  # a crooked, faint scan
                image = image.rotate(1.5, fillcolor=255).filter(ImageFilter.GaussianBlur(0.8))
                image = image.point(lambda v: min(255, v + 70))
            image.save(folder / f"page_{page:03d}.png", optimize=True)
    print(f"wrote pages for {len(ANSWERS)} students under {ROOT}")


if __name__ == "__main__":
    main()
