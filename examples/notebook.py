# %% [markdown]
# # rnngen in a notebook
# Each `# %%` is a cell (Jupyter, VS Code and `jupytext` read this file as a notebook); run it whole
# with `python examples/notebook.py` too. The plot and audio extras make pieces show as piano rolls and
# players: `pip install -e ".[plot,audio]"`.

# %%
import rnngen

shakespeare = rnngen.load("shakespeare")
shakespeare

# %% Ten samples in a list, one seed: the same texts `rnngen sample -b 10 -s 7 --format jsonl` gives
texts = shakespeare.sample(200, prime="ROMEO:", seed=7, batch=10, stop=["\n\n"])
for text in texts[:3]:
    print("ROMEO:" + text, end="\n---\n")

# %% How surprised the model is by a line it never saw, and by one it did
print(shakespeare.score("To be, or not to be, that is the question:\n"))
print(shakespeare.score("First Citizen:\nBefore we proceed any further, hear me speak.\n"))

# %% A chorale: in Jupyter, the cell's value shows as a piano roll and a player
bach = rnngen.load("bach")
pieces = bach.sample(600, batch=2, seed=1)
pieces[0]

# %%
print([part.name for part in pieces[0].parts], len(pieces[0].notes), "notes")
