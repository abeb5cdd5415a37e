"""Reading and writing datasets: the shapes (`formats`) and the files (`datafiles`)."""
