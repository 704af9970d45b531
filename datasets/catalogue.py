"""The built-in product catalogue: product types, their category paths, attribute spaces and
title templates. Development data only; the code never assumes a user's catalogue looks like it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProductType:
    name: str  # internal key, e.g. "phone_case"
    phrase: str  # how shoppers name it, e.g. "phone case"
    path: tuple[str, ...]  # category path; path[0] is the department, path[1] the family
    attributes: dict[str, tuple[str, ...]]
    brands: tuple[str, ...]
    price: tuple[float, float]
    title: str  # template over {brand}, {phrase_title} and attribute names
    accessory_of: str | None = None
    secondary: tuple[str, ...] = field(default=())  # attributes a query may name as nice-to-have

    @property
    def department(self) -> str:
        return self.path[0]

    @property
    def family(self) -> str:
        return self.path[1]

    @property
    def category_path(self) -> str:
        return " > ".join(self.path)


COLORS = ("black", "white", "pink", "red", "blue", "green", "beige", "grey", "navy", "purple")
PHONE_MODELS = ("iPhone 15", "iPhone 14", "Galaxy S24", "Pixel 8", "iPhone 13", "Galaxy A54")
CONNECTORS = ("USB-C", "Lightning", "Micro-USB")

_TYPES = [
    ProductType(
        "phone_case",
        "phone case",
        ("Electronics", "Phone Accessories", "Cases"),
        {
            "compatible_model": PHONE_MODELS,
            "color": COLORS,
            "material": ("silicone", "leather", "TPU", "clear plastic"),
        },
        ("Spigen", "OtterBox", "ESR", "Casetify", "Amazon Basics"),
        (8, 45),
        "{brand} {material} Case for {compatible_model}, {color}",
        accessory_of="smartphone",
        secondary=("material",),
    ),
    ProductType(
        "charger",
        "charger",
        ("Electronics", "Phone Accessories", "Chargers"),
        {"connector": CONNECTORS, "wattage": ("5W", "12W", "20W", "30W", "45W"), "color": ("white", "black")},
        ("Anker", "Belkin", "UGREEN", "Apple", "Samsung"),
        (9, 49),
        "{brand} {wattage} Fast Wall Charger with {connector} Cable, {color}",
        accessory_of="smartphone",
        secondary=("wattage",),
    ),
    ProductType(
        "charging_cable",
        "charging cable",
        ("Electronics", "Phone Accessories", "Cables"),
        {"connector": CONNECTORS, "length": ("3 ft", "6 ft", "10 ft"), "color": ("white", "black", "red")},
        ("Anker", "Belkin", "UGREEN", "Amazon Basics"),
        (6, 25),
        "{brand} {connector} Charging Cable {length}, Braided, {color}",
        accessory_of="smartphone",
        secondary=("length",),
    ),
    ProductType(
        "smartphone",
        "phone",
        ("Electronics", "Phones", "Smartphones"),
        {"model": PHONE_MODELS, "color": COLORS[:5], "storage": ("128GB", "256GB", "512GB")},
        ("Apple", "Samsung", "Google"),
        (399, 1199),
        "{brand} {model} {storage} Unlocked Smartphone, {color}",
        secondary=("storage",),
    ),
    ProductType(
        "earbuds",
        "wireless earbuds",
        ("Electronics", "Audio", "Earbuds"),
        {"color": ("black", "white", "blue"), "noise_cancelling": ("yes", "no")},
        ("Sony", "Soundcore", "JLab", "Apple", "Samsung"),
        (25, 279),
        "{brand} True Wireless Earbuds, Noise Cancelling: {noise_cancelling}, {color}",
        secondary=("noise_cancelling",),
    ),
    ProductType(
        "headphones",
        "over-ear headphones",
        ("Electronics", "Audio", "Headphones"),
        {"color": ("black", "silver", "blue"), "noise_cancelling": ("yes", "no")},
        ("Sony", "Bose", "Sennheiser", "Audio-Technica"),
        (49, 449),
        "{brand} Over-Ear Bluetooth Headphones, Noise Cancelling: {noise_cancelling}, {color}",
    ),
    ProductType(
        "game_controller",
        "controller",
        ("Electronics", "Gaming", "Controllers"),
        {"platform": ("PS5", "PS4", "Nintendo Switch", "Xbox Series X"), "color": ("black", "white", "red")},
        ("Sony", "Nintendo", "Microsoft", "PowerA", "8BitDo"),
        (25, 75),
        "{brand} Wireless Controller for {platform}, {color}",
    ),
    ProductType(
        "hair_styler",
        "hair styler",
        ("Beauty", "Hair Tools", "Stylers"),
        {"color": ("pink", "black", "nickel", "purple"), "heads": ("3 attachments", "5 attachments", "6 attachments")},
        ("Dyson", "Shark", "Revlon", "Laifen", "Conair"),
        (39, 599),
        "{brand} Multi Hair Styler and Dryer with {heads}, {color}",
    ),
    ProductType(
        "hair_dryer",
        "hair dryer",
        ("Beauty", "Hair Tools", "Dryers"),
        {"color": ("black", "pink", "white"), "wattage": ("1600W", "1875W")},
        ("Dyson", "Revlon", "Conair", "Remington"),
        (19, 429),
        "{brand} {wattage} Ionic Hair Dryer, {color}",
    ),
    ProductType(
        "straightener",
        "hair straightener",
        ("Beauty", "Hair Tools", "Straighteners"),
        {"color": ("black", "pink", "white"), "plate": ("ceramic", "titanium")},
        ("GHD", "Remington", "CHI", "Conair"),
        (25, 249),
        "{brand} {plate} Flat Iron Hair Straightener, {color}",
    ),
    ProductType(
        "running_shoes",
        "running shoes",
        ("Apparel", "Shoes", "Running Shoes"),
        {"color": COLORS, "size": ("7", "8", "9", "10", "11", "12"), "gender": ("men's", "women's")},
        ("Nike", "Adidas", "Brooks", "ASICS", "New Balance", "Hoka"),
        (49, 179),
        "{brand} {gender} Road Running Shoes, {color}, Size {size}",
        secondary=("color",),
    ),
    ProductType(
        "hiking_boots",
        "hiking boots",
        ("Apparel", "Shoes", "Boots"),
        {"color": ("brown", "black", "grey"), "size": ("7", "8", "9", "10", "11"), "waterproof": ("yes", "no")},
        ("Merrell", "Columbia", "Salomon", "KEEN"),
        (69, 229),
        "{brand} Mid Hiking Boots, Waterproof: {waterproof}, {color}, Size {size}",
    ),
    ProductType(
        "sandals",
        "sandals",
        ("Apparel", "Shoes", "Sandals"),
        {"color": ("tan", "black", "white", "gold"), "size": ("6", "7", "8", "9", "10")},
        ("Teva", "Birkenstock", "Sam Edelman", "Crocs"),
        (25, 130),
        "{brand} Flat Strappy Sandals, {color}, Size {size}",
    ),
    ProductType(
        "dress",
        "dress",
        ("Apparel", "Clothing", "Dresses"),
        {
            "color": COLORS,
            "material": ("linen", "cotton", "chiffon", "wool", "polyester"),
            "length": ("mini", "midi", "maxi"),
        },
        ("ZARA", "Reformation", "Anthropologie", "H&M", "PRETTYGARDEN"),
        (29, 249),
        "{brand} {material} {length} Dress for Women, {color}",
        secondary=("length",),
    ),
    ProductType(
        "linen_shirt",
        "linen shirt",
        ("Apparel", "Clothing", "Shirts"),
        {"color": ("white", "beige", "blue", "green"), "sleeve": ("short sleeve", "long sleeve")},
        ("J.Crew", "Uniqlo", "COOFANDY", "Banana Republic"),
        (22, 98),
        "{brand} Men's Linen Shirt, {sleeve}, {color}",
    ),
    ProductType(
        "rain_jacket",
        "rain jacket",
        ("Apparel", "Clothing", "Jackets"),
        {"color": ("yellow", "black", "navy", "green"), "waterproof": ("yes", "no")},
        ("The North Face", "Columbia", "Patagonia", "Marmot"),
        (49, 229),
        "{brand} Lightweight Rain Jacket with Hood, Waterproof: {waterproof}, {color}",
    ),
    ProductType(
        "wool_coat",
        "wool coat",
        ("Apparel", "Clothing", "Coats"),
        {"color": ("camel", "black", "grey", "navy")},
        ("Calvin Klein", "Tommy Hilfiger", "Cole Haan"),
        (120, 399),
        "{brand} Wool Blend Winter Coat, {color}",
    ),
    ProductType(
        "leggings",
        "leggings",
        ("Apparel", "Clothing", "Leggings"),
        {"color": ("black", "navy", "grey", "pink"), "rise": ("high rise", "mid rise")},
        ("Lululemon", "CRZ YOGA", "Colorfulkoala", "Gymshark"),
        (18, 118),
        '{brand} {rise} Yoga Leggings 25", {color}',
    ),
    ProductType(
        "coffee_pods",
        "coffee pods",
        ("Home", "Kitchen", "Coffee"),
        {"system": ("K-Cup", "Nespresso Original", "Nespresso Vertuo"), "roast": ("light", "medium", "dark")},
        ("Starbucks", "Peet's", "Lavazza", "Nespresso", "Green Mountain"),
        (9, 45),
        "{brand} {roast} Roast Coffee Pods, {system} Compatible, 24 Count",
    ),
    ProductType(
        "stand_mixer",
        "stand mixer",
        ("Home", "Kitchen", "Mixers"),
        {"color": ("red", "white", "black", "silver"), "capacity": ("4.5 qt", "5 qt", "6 qt")},
        ("KitchenAid", "Cuisinart", "Hamilton Beach", "Kitchen in the box"),
        (99, 499),
        "{brand} Tilt-Head Stand Mixer {capacity}, {color}",
    ),
    ProductType(
        "tumbler",
        "tumbler",
        ("Home", "Kitchen", "Drinkware"),
        {"color": ("pink", "black", "white", "green"), "capacity": ("20 oz", "30 oz", "40 oz")},
        ("Stanley", "Owala", "Simple Modern", "YETI"),
        (15, 50),
        "{brand} Insulated Tumbler with Handle and Straw {capacity}, {color}",
    ),
    ProductType(
        "light_bulb",
        "light bulb",
        ("Home", "Lighting", "Bulbs"),
        {"base": ("E26", "E12", "GU10"), "color_temperature": ("2700K warm white", "5000K daylight")},
        ("Philips", "GE", "Sylvania", "Amazon Basics"),
        (5, 30),
        "{brand} LED Light Bulb, {base} Base, {color_temperature}, 6 Pack",
        secondary=("color_temperature",),
    ),
    ProductType(
        "ink_cartridge",
        "ink cartridge",
        ("Office", "Printer Supplies", "Ink"),
        {"cartridge": ("HP 67", "HP 64", "Canon PG-275", "Epson 502"), "pack": ("black", "tri-color", "combo pack")},
        ("HP", "Canon", "Epson", "LinkToner"),
        (15, 70),
        "{cartridge} Ink Cartridge by {brand}, {pack}",
    ),
    ProductType(
        "printer",
        "printer",
        ("Office", "Printers", "Inkjet"),
        {"model": ("HP DeskJet 2755", "Canon PIXMA TS3520", "Epson EcoTank ET-2800")},
        ("HP", "Canon", "Epson"),
        (59, 249),
        "{brand} {model} Wireless All-in-One Printer",
    ),
    ProductType(
        "swaddle",
        "swaddle",
        ("Baby", "Nursery", "Swaddles"),
        {"color": ("white", "grey", "pink", "blue"), "material": ("cotton muslin", "bamboo")},
        ("Aden + Anais", "HALO", "Burt's Bees Baby"),
        (15, 45),
        "{brand} {material} Swaddle Blanket, 3 Pack, {color}",
    ),
    ProductType(
        "baby_bottle",
        "baby bottle",
        ("Baby", "Feeding", "Bottles"),
        {"material": ("glass", "plastic", "silicone"), "capacity": ("4 oz", "8 oz")},
        ("Dr. Brown's", "Philips Avent", "Comotomo"),
        (10, 35),
        "{brand} Anti-Colic Baby Bottle {capacity}, {material}",
    ),
    ProductType(
        "tent",
        "tent",
        ("Outdoors", "Camping", "Tents"),
        {"capacity": ("2 person", "4 person", "6 person"), "waterproof": ("yes", "no")},
        ("Coleman", "REI Co-op", "MSR", "Kelty"),
        (59, 499),
        "{brand} {capacity} Dome Tent, Waterproof: {waterproof}",
    ),
    ProductType(
        "sleeping_bag",
        "sleeping bag",
        ("Outdoors", "Camping", "Sleeping Bags"),
        {"temperature_rating": ("20F", "30F", "40F"), "color": ("blue", "green", "orange")},
        ("Coleman", "TETON", "Kelty", "Marmot"),
        (29, 199),
        "{brand} {temperature_rating} Mummy Sleeping Bag, {color}",
    ),
    ProductType(
        "headlamp",
        "headlamp",
        ("Outdoors", "Camping", "Lights"),
        {"lumens": ("300 lumens", "450 lumens", "1000 lumens"), "rechargeable": ("yes", "no")},
        ("Black Diamond", "Petzl", "Energizer"),
        (12, 69),
        "{brand} {lumens} LED Headlamp, Rechargeable: {rechargeable}",
    ),
    ProductType(
        "desk",
        "desk",
        ("Furniture", "Office Furniture", "Desks"),
        {"type": ("standing", "writing", "L-shaped"), "color": ("walnut", "white", "black", "oak")},
        ("FlexiSpot", "SHW", "IKEA", "Bush Furniture"),
        (89, 599),
        "{brand} {type} Desk for Home Office, {color}",
    ),
    ProductType(
        "office_chair",
        "office chair",
        ("Furniture", "Office Furniture", "Chairs"),
        {"color": ("black", "grey", "white"), "lumbar_support": ("yes", "no")},
        ("Herman Miller", "Steelcase", "SIHOO", "Hbada"),
        (99, 1399),
        "{brand} Ergonomic Office Chair, Lumbar Support: {lumbar_support}, {color}",
    ),
]

PRODUCT_TYPES: dict[str, ProductType] = {t.name: t for t in _TYPES}


def types_in_department(department: str) -> list[ProductType]:
    return [t for t in _TYPES if t.department == department]
