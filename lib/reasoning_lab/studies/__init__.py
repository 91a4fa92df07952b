"""The studies of the book, one folder each: data, objectives, figures and the experiment declaration."""
