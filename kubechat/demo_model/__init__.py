"""Build a tiny chat model in Baichuan-13B-Chat's layout, with no download."""
