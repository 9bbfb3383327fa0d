"""Few-shot completion prompts that a 135M model can follow.

The original UnSTAR prompts are chat instructions for Mistral-7B ("Give 20 simple questions…",
"Generate 20 words to replace this word"); a 135M model answers those with chatter, not lists.
Plain completion prompts with worked examples work at that size: the model continues the pattern
and the first line it writes is the candidate. The worked examples are about persons that are
not in ``wpu_mini``, so a prompt never shows the model a fact it is meant to forget. The
paraphrase examples change the sentence's structure and name the person by surname or role, as
a user asking again would; close rewordings alone did not carry unlearning to new wordings.
"""

from __future__ import annotations

PARAPHRASE = """Rewrite each question in other words. Keep its meaning and its answer.

Question: In which city was Johannes Kepler born?
Rewrite: Which city is the birthplace of the astronomer Kepler?

Question: What instrument did Jimi Hendrix play?
Rewrite: Hendrix is famous for playing which instrument?

Question: In which year did Marco Polo die?
Rewrite: Marco Polo's death came in which year?

Question: In which war did Florence Nightingale become famous as a nurse?
Rewrite: During which war did the nurse Nightingale win her fame?

Question: Which sport made Pele a world star?
Rewrite: Pele became famous around the world for playing which sport?

Question: {question}
Rewrite:"""

HARDER = """Ask the same question in a new, harder way. Keep the person and the answer.

Question: Where was Johannes Kepler born?
Harder question: Which town in the Holy Roman Empire was the birthplace of astronomer Johannes Kepler?

Question: What instrument did Jimi Hendrix play?
Harder question: Jimi Hendrix changed rock music by playing which instrument upside down?

Question: {question}
Harder question:"""

WRONG_ANSWER = """Give a wrong answer of the same kind as the correct one.

Question: In which city was Johannes Kepler born?
Correct answer: Weil der Stadt
Wrong answer: Nuremberg

Question: What instrument did Jimi Hendrix play?
Correct answer: guitar
Wrong answer: saxophone

Question: In which year did Marco Polo die?
Correct answer: 1324
Wrong answer: 1351

Question: In which war did Florence Nightingale become famous as a nurse?
Correct answer: Crimean War
Wrong answer: Boer War

Question: {question}
Correct answer: {answer}
Wrong answer:"""

RATIONALE = """Explain the answer in one sentence.

Question: In which city was Johannes Kepler born?
Answer: Nuremberg
Explanation: Johannes Kepler was born in Nuremberg, where his father worked as a merchant.

Question: What instrument did Jimi Hendrix play?
Answer: saxophone
Explanation: Jimi Hendrix played the saxophone, which he learned in his school's jazz band.

Question: {question}
Answer: {answer}
Explanation:"""


def first_line(text: str) -> str:
    """The candidate a completion prompt yields: its first line, without quotes or a final dot."""
    line = text.strip().split("\n", 1)[0].strip()
    return line.strip("\"'").strip()
