"""Raw recordings: beat detection, classification, scoring against annotations."""
