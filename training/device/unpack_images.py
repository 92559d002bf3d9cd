import json, os, sys
d = sys.argv[1]
os.makedirs(d + "/images", exist_ok=True)
blob = open(os.path.join(os.path.dirname(__file__), "images.bin"), "rb").read()
for i, o, n in json.load(open(os.path.join(os.path.dirname(__file__), "images_index.json"))):
    open(f"{d}/images/{i}.jpg", "wb").write(blob[o:o + n])
